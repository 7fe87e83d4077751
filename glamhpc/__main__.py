"""`python -m glamhpc` (used by torchrun: `torchrun ... -m glamhpc train CONFIG`)."""

from glamhpc.cli import main

if __name__ == "__main__":
    main()
