"""The GLAM policy: seq2seq LLMs scoring candidate actions, with a value head.

- `hubcache`: where model files live (hub cache, glamhpc cache); torch-free.
- `t5`: FLAN-T5 shapes and random-init T5 models, built without any file.
- `tiny`: the offline tiny-t5 default model (tokenizer trained on `tiny_corpus`).
- `models`: load FLAN-T5 / any seq2seq model offline-first, or the tiny-t5 build.
- `scoring`: candidate log-probs (encoder once, decoder shared across candidates).
- `glam`: `GlamPolicy` (actor-critic `nn.Module`: `forward`, `act`, `evaluate`).

Import the submodules directly: this package imports nothing itself, so that the torch-free
`hubcache` can be used (by the doctor, by container builds) without loading torch. Knows nothing
of the environments (no minigrid/gymnasium import).
"""
