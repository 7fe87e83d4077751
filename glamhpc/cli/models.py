"""`glamhpc models ...`: fetch hub models ahead of time, inspect model shapes, build tiny-t5.

Compute nodes often have no internet: `prefetch` runs on a login node (or any machine with
internet) and fills the Hugging Face cache that training later reads offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from glamhpc.cli import app

models_app = typer.Typer(
    help="Model files: prefetch hub models, show shapes and sizes, build tiny-t5.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

# The files a seq2seq policy needs: config, safetensors weights, tokenizer (fast or sentencepiece).
_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]
_BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model*.bin.index.json"]

_CACHE_OPT = typer.Option(
    None,
    "--cache",
    help="cache folder (hub models: HF cache, default $HF_HOME/hub; tiny-t5: glamhpc cache)",
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


@models_app.command("prefetch")
def prefetch(
    name: str = typer.Argument(..., help="hub id, e.g. google/flan-t5-large (or tiny-t5)"),
    cache: Path | None = _CACHE_OPT,
) -> None:
    """Download a model's config, weights and tokenizer into the local cache."""
    from glamhpc.policy import hubcache

    if name == hubcache.TINY_T5:
        from glamhpc.policy.tiny import build_tiny_t5

        typer.echo(str(build_tiny_t5(cache)))
        return
    if hubcache.hf_offline():
        _fail(
            f"cannot prefetch {name!r}: HF_HUB_OFFLINE is set. Run this command on a machine with "
            "internet access (unset HF_HUB_OFFLINE), then copy or share its HF cache."
        )
    from huggingface_hub import snapshot_download

    cache_dir = str(cache) if cache is not None else None
    try:
        folder = Path(snapshot_download(name, cache_dir=cache_dir, allow_patterns=_PATTERNS))
        if not any(folder.glob("*.safetensors")):
            # Older repos only ship PyTorch pickles.
            folder = Path(
                snapshot_download(name, cache_dir=cache_dir, allow_patterns=_BIN_PATTERNS)
            )
    except Exception as err:  # any hub/network failure becomes one clear line, no traceback
        _fail(
            f"could not download {name!r} ({_first_line(err)}). Check the model id and this "
            "machine's internet access (proxy, HF_ENDPOINT); without internet, prefetch on a "
            "machine that has it and copy the cache, or set model.path=/path/to/folder."
        )
    typer.echo(str(folder))


def _describe(config: Any, params: int) -> list[str]:
    fields = ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "d_kv")
    shape = ", ".join(f"{f} {getattr(config, f)}" for f in fields if hasattr(config, f))
    extra = getattr(config, "feed_forward_proj", None)
    gib = 1024**3
    return [
        f"params: {params / 1e6:.1f} M",
        f"shape: {shape}, vocab {config.vocab_size}" + (f", {extra}" if extra else ""),
        f"weights: fp32 {params * 4 / gib:.2f} GiB, bf16 {params * 2 / gib:.2f} GiB; full "
        f"fine-tuning with Adam in fp32 ~{params * 16 / gib:.1f} GiB before activations",
    ]


@models_app.command("info")
def info(
    name: str = typer.Argument(..., help="tiny-t5, a hub id or a local folder"),
    cache: Path | None = _CACHE_OPT,
) -> None:
    """Show parameters, shapes, memory needs and whether the model is cached locally."""
    import torch

    from glamhpc.policy import hubcache, tiny
    from glamhpc.policy.models import count_params
    from glamhpc.policy.t5 import build_from_config, is_flan, t5_config_for

    lines = [f"model: {name}"]
    if name == hubcache.TINY_T5:
        folder = tiny.tiny_t5_dir(cache)
        built = folder.is_dir()
        if built:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        else:
            config = tiny.tiny_t5_config(vocab_size=1)  # the vocab is known after the build
        with torch.device("meta"):
            params = count_params(build_from_config(config))
        lines += _describe(config, params)
        state = f"yes ({folder})" if built else "no (built on first use, or `models build-tiny`)"
        lines.append(f"cached locally: {state}")
    else:
        local = Path(name).expanduser()
        config = None
        if is_flan(name):
            config = t5_config_for(name)
        else:
            from transformers import AutoConfig

            try:
                config = AutoConfig.from_pretrained(
                    name, local_files_only=True, cache_dir=str(cache) if cache else None
                )
            except (OSError, ValueError) as err:
                _fail(f"no config for {name!r} on this machine ({_first_line(err)})")
        with torch.device("meta"):
            params = count_params(build_from_config(config))
        lines += _describe(config, params)
        if local.is_dir():
            lines.append(f"cached locally: local folder {local}")
        else:
            cached = hubcache.is_cached_locally(name, cache)
            hint = "" if cached else f" (run `glamhpc models prefetch {name}` with internet)"
            lines.append(f"cached locally: {'yes' if cached else 'no'}{hint}")
    for line in lines:
        typer.echo(line)


@models_app.command("build-tiny")
def build_tiny(cache: Path | None = _CACHE_OPT) -> None:
    """Build (once) the offline tiny-t5 model and tokenizer and print its folder."""
    from glamhpc.policy.tiny import build_tiny_t5

    typer.echo(str(build_tiny_t5(cache)))
