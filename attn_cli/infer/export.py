"""`attn export`: a run directory's best weights as a CTranslate2 model in ``RUN_DIR/ct2/``.

The mapping is direct, since attn's layers are what CTranslate2's ``TransformerSpec`` describes
with ``pre_norm=True`` and exact (erf) GELU:

  attn                                    CTranslate2 spec
  src_embed / tgt_embed (or embed)        encoder.embeddings[0] / decoder.embeddings (scaled by sqrt(D))
  SinusoidalPositions table (max_len, D)  {encoder,decoder}.position_encodings.encodings
  layers.i.ln_attn / ln_self              layer[i].self_attention.layer_norm (gamma, beta)
  layers.i.attn.qkv_proj (3D, D) fused    layer[i].self_attention.linear[0]
  layers.i.*.out_proj                     linear[-1] of that attention
  layers.i.ln_cross                       layer[i].attention.layer_norm
  layers.i.cross_attn.q_proj / kv_proj    layer[i].attention.linear[0] / linear[1]
  layers.i.ln_ff, ff.fc1, ff.fc2          layer[i].ffn.layer_norm, linear_0, linear_1
  encoder.ln_out / decoder.ln_out         the stack's layer_norm
  output_weight (tied or out_proj)        decoder.projection

Sentiment runs export the encoder as a ``TransformerEncoderModelSpec``; mean pooling and the
head run outside CTranslate2, from
``ct2/head.safetensors``. ``ct2/attn_export.json`` is written last: it records what was exported
from which weights (size, mtime, sha256), so a run trained after its export is detected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from attn_cli import rundir as ckpt
from attn_cli.config import ModelConfig
from attn_cli.errors import AttnError, RunFailure

EXPORT_DIR = "ct2"
EXPORT_META = "attn_export.json"  # written last: a ct2/ without it is not an attn export
HEAD_FILE = "head.safetensors"  # sentiment: the classifier head
QUANTIZATIONS = ("none", "int8", "int8_float16", "float16")
FORMAT = 1  # version of the attn_export.json layout
INSTALL_HINT = "pip install 'ctranslate2>=4.6.3'"


def import_ct2():
    """The ctranslate2 module, or a one-line error with the install command."""
    try:
        import ctranslate2
    except ImportError:
        raise AttnError("the CTranslate2 engine is not installed", INSTALL_HINT) from None
    return ctranslate2


@dataclass
class ExportInfo:
    """What ``ct2/attn_export.json`` says about an export."""

    format: int  # FORMAT of the file
    task: str  # translate | summarize | sentiment
    quantization: str  # one of QUANTIZATIONS
    src_vocab_size: int  # pieces of the source (or joint) vocabulary
    tgt_vocab_size: int  # pieces of the target vocabulary (0 for sentiment)
    weights_size: int  # bytes of model.safetensors when exported
    weights_mtime_ns: int  # its modification time then
    weights_sha256: str  # its digest: a copied run (new mtimes) still matches
    ctranslate2_version: str  # of the exporting library


@dataclass
class ExportStatus:
    """Whether a run's ct2/ can be used: ``info`` when valid, ``problem`` when present but not
    (foreign, corrupt, stale); both None when the run was never exported."""

    path: Path  # RUN_DIR/ct2
    info: ExportInfo | None
    problem: str | None
    stale: bool = False  # valid, but the weights changed since the export


# --------------------------------------------------------------------------- fingerprint


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_fingerprint(path: Path) -> tuple[int, int, str]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, _sha256(path)


def weights_changed(run_dir: Path, info: ExportInfo) -> bool:
    """True when model.safetensors is not the file that was exported (cheap when untouched)."""
    path = run_dir / ckpt.WEIGHTS_FILE
    st = path.stat()
    if st.st_size != info.weights_size:
        return True
    if st.st_mtime_ns == info.weights_mtime_ns:
        return False
    return _sha256(path) != info.weights_sha256


# --------------------------------------------------------------------------- spec building


def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
    """(max_len, D) float32: attn's SinusoidalPositions table (sin at even, cos at odd dims)."""
    from attn_cli.model.layers import SinusoidalPositions

    return SinusoidalPositions(d_model, max_len).pe.numpy()


def _np(state: dict, name: str) -> np.ndarray:
    return np.ascontiguousarray(state[name].float().numpy())


def _ln(spec, state: dict, prefix: str) -> None:
    spec.gamma, spec.beta = _np(state, prefix + ".weight"), _np(state, prefix + ".bias")


def _linear(spec, state: dict, prefix: str) -> None:
    spec.weight = _np(state, prefix + ".weight")  # (out, in), as torch stores it
    if prefix + ".bias" in state:
        spec.bias = _np(state, prefix + ".bias")


def _self_attention(spec, state: dict, prefix: str, ln: str) -> None:
    _ln(spec.layer_norm, state, ln)
    _linear(spec.linear[0], state, prefix + ".qkv_proj")  # (3D, D): q, k, v in this order
    _linear(spec.linear[1], state, prefix + ".out_proj")


def _ffn(spec, state: dict, prefix: str) -> None:
    _ln(spec.layer_norm, state, prefix + ".ln_ff")
    _linear(spec.linear_0, state, prefix + ".ff.fc1")
    _linear(spec.linear_1, state, prefix + ".ff.fc2")


def _fill_encoder(enc, cfg: ModelConfig, state: dict, embed: str) -> None:
    enc.embeddings[0].weight = _np(state, embed)
    enc.position_encodings.encodings = sinusoidal_table(cfg.max_len, cfg.d_model)
    for i, layer in enumerate(enc.layer):
        p = f"encoder.layers.{i}"
        _self_attention(layer.self_attention, state, p + ".attn", p + ".ln_attn")
        _ffn(layer.ffn, state, p)
    _ln(enc.layer_norm, state, "encoder.ln_out")


def _fill_decoder(dec, cfg: ModelConfig, state: dict, embed: str, output: str) -> None:
    dec.embeddings.weight = _np(state, embed)
    dec.position_encodings.encodings = sinusoidal_table(cfg.max_len, cfg.d_model)
    for i, layer in enumerate(dec.layer):
        p = f"decoder.layers.{i}"
        _self_attention(layer.self_attention, state, p + ".self_attn", p + ".ln_self")
        _ln(layer.attention.layer_norm, state, p + ".ln_cross")
        _linear(layer.attention.linear[0], state, p + ".cross_attn.q_proj")  # (D, D)
        _linear(layer.attention.linear[1], state, p + ".cross_attn.kv_proj")  # (2D, D): k, v
        _linear(layer.attention.linear[2], state, p + ".cross_attn.out_proj")
        _ffn(layer.ffn, state, p)
    _ln(dec.layer_norm, state, "decoder.ln_out")
    dec.projection.weight = _np(state, output)  # (V, D), the tied embedding by default


def _stack_options() -> dict:
    """Spec options shared by encoder and decoder."""
    from ctranslate2.specs import common_spec

    return dict(pre_norm=True, activation=common_spec.Activation.GELU)


def _encoder_spec(cfg: ModelConfig):
    from ctranslate2.specs import transformer_spec as ts

    return ts.TransformerEncoderSpec(cfg.n_enc_layers, cfg.n_heads, **_stack_options())


def build_seq2seq_spec(cfg: ModelConfig, state: dict, src_pieces: list[str], tgt_pieces: list[str]):
    """A TransformerSpec holding a Seq2Seq state dict, with the SentencePiece pieces as vocabularies."""
    from ctranslate2.specs import transformer_spec as ts

    dec = ts.TransformerDecoderSpec(cfg.n_dec_layers, cfg.n_heads, **_stack_options())
    spec = ts.TransformerSpec(_encoder_spec(cfg), dec)
    tgt_embed = "tgt_embed.weight" if "tgt_embed.weight" in state else "src_embed.weight"
    output = "out_proj.weight" if "out_proj.weight" in state else tgt_embed
    _fill_encoder(spec.encoder, cfg, state, "src_embed.weight")
    _fill_decoder(spec.decoder, cfg, state, tgt_embed, output)
    _special_tokens(spec.config, src_pieces, cfg)
    spec.config.decoder_start_token = src_pieces[cfg.bos_id] if tgt_pieces is src_pieces \
        else tgt_pieces[cfg.bos_id]
    spec.register_source_vocabulary(src_pieces)
    spec.register_target_vocabulary(tgt_pieces)
    return spec


def build_encoder_spec(cfg: ModelConfig, state: dict, pieces: list[str]):
    """A TransformerEncoderModelSpec holding a Classifier's embedding and encoder."""
    from ctranslate2.specs import transformer_spec as ts

    spec = ts.TransformerEncoderModelSpec(_encoder_spec(cfg))
    _fill_encoder(spec.encoder, cfg, state, "embed.weight")
    _special_tokens(spec.config, pieces, cfg)
    spec.register_vocabulary(pieces)
    return spec


def _special_tokens(config, pieces: list[str], cfg: ModelConfig) -> None:
    from attn_cli.data.tokenizer import UNK_ID

    config.unk_token, config.bos_token = pieces[UNK_ID], pieces[cfg.bos_id]
    config.eos_token = pieces[cfg.eos_id]
    config.layer_norm_epsilon = 1e-5  # torch's nn.LayerNorm default


def head_state(state: dict) -> dict:
    """The Classifier tensors that run outside CTranslate2: the head."""
    return {k: v.float().contiguous() for k, v in state.items() if k.startswith("head.")}


# --------------------------------------------------------------------------- export


def export_run(run_dir: Path, quantize: str = "none", out: Path | None = None) -> tuple[Path, ExportInfo]:
    """Write the CTranslate2 model of ``run_dir`` to ``out`` (default RUN_DIR/ct2), atomically:
    built in a temporary directory beside it, then renamed over any previous export."""
    from safetensors.torch import load_file, save_file

    from attn_cli.infer.runs import load_run_files

    if quantize not in QUANTIZATIONS:
        raise AttnError(f"unknown --quantize '{quantize}'", f"use one of {', '.join(QUANTIZATIONS)}")
    ct2 = import_ct2()
    run_dir = Path(run_dir)
    meta, cfg, toks = load_run_files(run_dir)
    weights = run_dir / ckpt.WEIGHTS_FILE
    if not weights.is_file():
        raise AttnError(f"{run_dir} has no {ckpt.WEIGHTS_FILE} yet", "train until the first evaluation")
    size, mtime, digest = _weights_fingerprint(weights)
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds
        raise AttnError(f"cannot read {weights}: {e}", "the file is corrupt; retrain or restore it") from None
    _check_state(state, cfg, weights)
    src = [toks.src.id_to_piece(i) for i in range(toks.src.vocab_size)]
    if cfg.is_seq2seq:
        tgt = src if toks.joint else [toks.tgt.id_to_piece(i) for i in range(toks.tgt.vocab_size)]
        spec = build_seq2seq_spec(cfg, state, src, tgt)
    else:
        spec = build_encoder_spec(cfg, state, src)
    out = Path(out) if out is not None else run_dir / EXPORT_DIR
    ckpt.prepare_out_dir(out, overwrite=True, what="export")
    info = ExportInfo(FORMAT, cfg.task, quantize, toks.src.vocab_size,
                      toks.tgt.vocab_size if cfg.is_seq2seq else 0, size, mtime, digest,
                      ct2.__version__)
    staged = ckpt.stage_dir(out)
    try:
        spec.validate()
        spec.optimize(quantization=None if quantize == "none" else quantize)
        spec.save(str(staged))
        if not cfg.is_seq2seq:
            save_file(head_state(state), str(staged / HEAD_FILE))
        (staged / EXPORT_META).write_text(json.dumps(asdict(info), indent=1) + "\n")
        ckpt.commit_dir(staged, out)
    except OSError as e:
        raise RunFailure(f"could not write the export to {out}: {e.strerror or e}",
                         "check free disk space and permissions") from None
    finally:
        if staged.exists():
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
    return out, info


def _check_state(state: dict, cfg: ModelConfig, path: Path) -> None:
    """The weights hold what the config says (the same check load_run makes through torch)."""
    from attn_cli.model.transformer import build_model

    expected = build_model(cfg).state_dict()
    for name, tensor in expected.items():
        if name not in state or tuple(state[name].shape) != tuple(tensor.shape):
            raise AttnError(f"{path}: tensor '{name}' is missing or has the wrong shape",
                            "the weights do not match config.json")


# --------------------------------------------------------------------------- reading an export


def export_status(run_dir: Path, model_cfg: ModelConfig, src_vocab: int, tgt_vocab: int,
                  ct2_dir: Path | None = None) -> ExportStatus:
    """Check RUN_DIR/ct2 (or ``ct2_dir``) against the run: present, written by attn export for
    this task and vocabulary, complete, and made from the current weights."""
    path = Path(ct2_dir) if ct2_dir is not None else Path(run_dir) / EXPORT_DIR
    if not path.exists():
        return ExportStatus(path, None, None)
    if not path.is_dir():
        return ExportStatus(path, None, f"{path} is not a directory")
    meta = path / EXPORT_META
    if not meta.is_file():
        return ExportStatus(path, None, f"{path} was not written by attn export (no {EXPORT_META})")
    try:
        raw = json.loads(meta.read_text(encoding="utf-8"))
        info = ExportInfo(**{k: raw[k] for k in ExportInfo.__dataclass_fields__ if k in raw})
    except (ValueError, TypeError, UnicodeDecodeError, OSError):
        return ExportStatus(path, None, f"{meta} is unreadable")
    want = tgt_vocab if model_cfg.is_seq2seq else 0
    problem = None
    if not (path / "model.bin").is_file():
        problem = f"{path} has no model.bin"
    elif info.format != FORMAT or info.task != model_cfg.task:
        problem = f"{path} holds a {info.task} export that is not of this run"
    elif info.src_vocab_size != src_vocab or info.tgt_vocab_size != want or not _vocab_ok(path, info):
        problem = f"{path}: vocabulary size does not match the run's tokenizer"
    elif not model_cfg.is_seq2seq and not (path / HEAD_FILE).is_file():
        problem = f"{path} has no {HEAD_FILE}"
    if problem:
        return ExportStatus(path, None, problem)
    stale = weights_changed(Path(run_dir), info)
    return ExportStatus(path, info, None, stale)


def _vocab_ok(path: Path, info: ExportInfo) -> bool:
    """The vocabulary files CTranslate2 saved have the sizes the export recorded."""
    def lines(name: str) -> int | None:
        for ext in (".json", ".txt"):
            f = path / (name + ext)
            if f.is_file():
                try:
                    if ext == ".json":
                        return len(json.loads(f.read_text(encoding="utf-8")))
                    return len(f.read_text(encoding="utf-8").splitlines())
                except (ValueError, UnicodeDecodeError, OSError):
                    return None
        return None

    if info.task == "sentiment":
        return lines("vocabulary") == info.src_vocab_size
    shared = lines("shared_vocabulary")
    if shared is not None:
        return shared == info.src_vocab_size == info.tgt_vocab_size
    return lines("source_vocabulary") == info.src_vocab_size and lines("target_vocabulary") == info.tgt_vocab_size


def describe(status: ExportStatus) -> str:
    """One line for `attn info`."""
    if status.info is None:
        return status.problem or "none (attn export RUN makes one)"
    q = status.info.quantization
    line = f"CTranslate2, {'float32' if q == 'none' else q} weights, {status.path.name}/"
    return line + (" (stale: the run was trained after it; re-export)" if status.stale else "")

