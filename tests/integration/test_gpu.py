"""The CUDA path: bf16 autocast, flash SDPA, fused AdamW, torch.compile. Skipped without a GPU."""

import pytest
import torch
from conftest import DATA_DIR

from attn_cli.config import TrainConfig, model_config_from_preset
from attn_cli.device import pick_precision
from attn_cli.model.transformer import build_model
from attn_cli.train.optim import make_optimizer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _batch(v=500, b=8, s=24, device="cuda"):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(4, v, (b, s), generator=g).to(device),
            torch.randint(4, v, (b, s), generator=g).to(device))


def test_auto_precision_is_bf16_on_gpu():
    assert pick_precision("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_precision("auto", torch.device("cpu")) is None


def test_flash_sdpa_bf16_matches_fp32():
    """A batch without padding passes no mask, so every attention call can take flash."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg = model_config_from_preset("small", "translate", 500)
    model = build_model(cfg).cuda().eval()
    src, tgt = _batch()
    with torch.no_grad():
        ref = model(src, tgt).float()
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(src, tgt).float()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    torch.testing.assert_close(out, ref, atol=0.15, rtol=0.05)


def test_padded_batch_runs_on_fused_kernels_without_math_fallback():
    """With padding the mask is needed: flash cannot take it, the memory-efficient kernel can."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = build_model(model_config_from_preset("small", "translate", 500)).cuda().eval()
    src, tgt = _batch()
    src[1, 12:] = 0  # pad id 0: the second sentence is 12 tokens long
    with torch.no_grad():
        ref = model(src, tgt).float()
        with (sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]),
              torch.autocast("cuda", dtype=torch.bfloat16)):
            out = model(src, tgt).float()
    torch.testing.assert_close(out, ref, atol=0.15, rtol=0.05)


def test_fused_adamw_bf16_steps_reduce_loss():
    model = build_model(model_config_from_preset("tiny", "translate", 500)).cuda()
    opt = make_optimizer(model, TrainConfig(task="translate"), torch.device("cuda"))
    assert opt.defaults["fused"]
    src, tgt = _batch()
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(src, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tgt[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_compiled_model_matches_eager():
    model = build_model(model_config_from_preset("tiny", "sentiment", 500, num_labels=2)).cuda().eval()
    src, _ = _batch()
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(src), model(src), atol=1e-3, rtol=1e-3)


def _cli(*args, timeout=300):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "attn_cli", *args], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_cli_trains_compiled_bf16_on_cuda_then_translates_and_evaluates(tmp_path):
    """The user's path on a GPU: attn train (auto device = cuda, bf16, compile), translate, eval."""
    import json

    data = f"{DATA_DIR}/translate.it-en.jsonl"
    run = tmp_path / "run"
    _cli("train", "translate", "--data", data, "--src", "it", "--tgt", "en", "--out", str(run),
         "--preset", "tiny", "--max-steps", "40", "--eval-every", "20", "--compile")
    card = (run / "README.md").read_text()
    assert "on cuda" in card
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert evals and all(e["valid_loss"] == e["valid_loss"] for e in evals)  # finite, not NaN
    out = _cli("translate", "--model", str(run), "--beam", "3", "Il pranzo è all'una.")
    assert out.strip()
    scores = json.loads(_cli("eval", "--model", str(run), "--data", data, "--src", "it", "--tgt", "en",
                             "--json"))
    assert "bleu" in scores


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cli_trains_sentiment_finitely_on_cuda(tmp_path, precision):
    """Sentiment with --ema in bf16 and in fp16 (through the grad scaler) trains finitely on cuda."""
    import json
    import math

    data = f"{DATA_DIR}/sentiment.jsonl"
    run = tmp_path / "run"
    _cli("train", "sentiment", "--data", data, "--out", str(run), "--preset", "tiny",
         "--max-steps", "30", "--eval-every", "15", "--log-every", "5", "--ema", "0.9",
         "--precision", precision)
    assert "on cuda" in (run / "README.md").read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["event"] == "train"]
    evals = [r for r in rows if r["event"] == "eval"]
    assert len(losses) >= 5 and all(math.isfinite(x) for x in losses)
    assert evals and all(math.isfinite(e["valid_loss"]) for e in evals)
