"""benchmarks/gpu_step.py on the CPU: its FLOP count against a hand count, the peak lookup, and
the script end to end at tiny sizes (the GPU columns read n/a or stay empty there)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_step  # noqa: E402

from attn_cli.config import model_config_from_preset  # noqa: E402
from attn_cli.data.batching import collate_seq2seq  # noqa: E402
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: E402


def hand_count(b: int, s: int, t: int, d: int, f: int, v: int, enc: int, dec: int) -> dict[str, int]:
    """FLOPs of one training step of a Seq2Seq (tied joint vocabulary) on a (B, S) source and a
    (B, T) target, written out product by product. A Linear over m rows, k in, n out: 2mkn
    forward, 4mkn backward (input and weight gradients: every Linear's input needs a gradient,
    the embeddings being trained). Attention over q queries and k keys: 2·B·q·k·D for QK^T and
    as much for AV (summed over heads); a fused SDPA backward counts 5 such products
    (FlopCounterMode's formula: the scores are recomputed), 2.5x the forward. The output
    projection (B·T rows, D -> V) makes its logits and both gradients inside the loss's forward:
    3 x 2·B·T·D·V. Norms, softmax, GELU and AdamW do no matrix products and are not counted."""
    def lin(m: int, k: int, n: int) -> int:
        return 2 * m * k * n

    enc_lin = lin(b * s, d, 3 * d) + lin(b * s, d, d) + lin(b * s, d, f) + lin(b * s, f, d)
    dec_lin = (lin(b * t, d, 3 * d) + lin(b * t, d, d)  # self-attention: fused qkv, out
               + lin(b * t, d, d) + lin(b * s, d, 2 * d) + lin(b * t, d, d)  # cross: q, kv (memory), out
               + lin(b * t, d, f) + lin(b * t, f, d))
    linear = enc * enc_lin + dec * dec_lin
    attention = enc * 2 * (2 * b * s * s * d) + dec * 2 * (2 * b * t * t * d + 2 * b * t * s * d)
    output = 3 * lin(b * t, d, v)
    return {"linear": 3 * linear, "attention": attention + attention * 5 // 2, "output": output}


def test_flop_count_matches_a_hand_count_of_the_matrix_products(tmp_path):
    d, f, v, enc, dec = 16, 32, 300, 1, 2
    mcfg = model_config_from_preset("tiny", "translate", v, d_model=d, n_heads=2, d_ff=f,
                                    n_enc_layers=enc, n_dec_layers=dec, dropout=0.0)
    trainer = gpu_step.build_trainer(mcfg, torch.device("cpu"), run_dir=tmp_path)
    rows = [([5] * 7, [6] * 4), ([7] * 5, [8] * 3), ([9] * 6, [10] * 2)]  # S = 7, T = 4 + 1 = 5
    batch = collate_seq2seq(rows, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
    assert tuple(batch.src.shape) == (3, 7) and tuple(batch.tgt_in.shape) == (3, 5)
    counted = gpu_step.count_step_flops(trainer, batch)
    parts = hand_count(3, 7, 5, d, f, v, enc, dec)
    # exact: every product's shape is known; the padded rows are multiplied like the others
    assert counted == sum(parts.values()), (counted, parts)


def test_flop_count_sees_the_attention_kernels_on_the_cpu(tmp_path, monkeypatch):
    """Without the CPU's fused-SDPA formulas FlopCounterMode would miss attention entirely."""
    mcfg = model_config_from_preset("tiny", "translate", 300, dropout=0.0)
    trainer = gpu_step.build_trainer(mcfg, torch.device("cpu"), run_dir=tmp_path)
    batch = gpu_step.synthetic_batch(256, 16, 300)
    with_attention = gpu_step.count_step_flops(trainer, batch)
    monkeypatch.setattr(gpu_step, "_cpu_sdpa_formulas", dict)
    without = gpu_step.count_step_flops(trainer, batch)
    assert with_attention > without


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 SXM5", 989e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA GeForce RTX 4090", None),
    ("cpu", None),
])
def test_peak_is_looked_up_by_device_name(name, peak):
    assert gpu_step.peak_flops(name) == peak


def test_synthetic_batch_fills_the_token_budget():
    batch = gpu_step.synthetic_batch(4096, 32, 8000)
    assert batch.n_examples == 128 and tuple(batch.src.shape) == (128, 32) and tuple(batch.tgt_in.shape) == (128, 32)
    assert 0 < batch.pad_fraction < 0.25 and int(batch.src.min()) >= 0


def test_busy_time_is_the_union_of_kernel_intervals():
    assert gpu_step._union_us([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25


def test_script_runs_on_the_cpu_and_writes_its_table_and_json(tmp_path):
    out = tmp_path / "step.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--device", "cpu",
                        "--presets", "tiny", "--tokens", "512", "--steps", "2", "--warmup", "1",
                        "--modes", "eager", "--vocab", "1000", "--json", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "unknown peak" in r.stdout
    assert "| preset | tokens/batch | mode | target tok/s | TFLOP/step |" in r.stdout
    table_row = next(line for line in r.stdout.splitlines() if line.startswith("| tiny | 512 | eager |"))
    assert "n/a" in table_row  # GPU busy on the CPU
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["peak_flops"] is None
    (row,) = data["rows"]
    assert row["status"] == "ok" and row["tokens"] == 512 and row["mfu"] is None and row["gpu_busy"] is None
    assert row["tflop_per_step"] > 0 and row["target_tokens_per_s"] > 0 and row["examples"] == 16


def test_an_oom_row_says_so():
    row = {"preset": "big", "mode": "compiled", "tokens": 65536, "status": "OOM"}
    assert gpu_step.format_row(row).startswith("| big | 65536 | compiled | OOM |")
