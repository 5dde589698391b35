"""Token-by-token decoding with a KV cache: eager, torch.compile and deepvisor
on GPT-2's generate(), in one run on one device.

    python3 bench/generate.py                          # GPT-2 (124M, random weights), CUDA
    python3 bench/generate.py --device cpu --size small --new-tokens 24

generate() calls the model's forward once for the prompt and once per new
token, with a DynamicCache whose keys and values grow by one position a
call: the sizes change on every call, through tensors reached from an
argument (cache.layers[i].keys), not passed directly. Each mode compiles
model.forward (torch.compile: its default, dynamic after the first
recompile; deepvisor: a dimension that changes becomes a symbol). Reported
per mode: the first generate() (captures and compiles included), then the
median of `--repeat` more (the steady state: every length seen before),
tokens per second of that median, whether the tokens equal eager's, and
deepvisor's captures, instances and eager calls. Greedy decoding; weights
random (seed 0), float32 unless --dtype bfloat16.
"""

import argparse
import statistics
import time

import torch

import deepvisor


def build(size, device, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    if size == "small":
        cfg = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=1000)
    else:
        cfg = GPT2Config()  # GPT-2 small: 12 layers, 768 wide, 50257 tokens
    cfg.bos_token_id = cfg.eos_token_id = 0
    return GPT2LMHeadModel(cfg).eval().to(device, dtype), cfg.vocab_size


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# deepvisor's stats() reported per run (declined: lengths run eagerly past DEEPVISOR_MAX_INSTANCES)
_COUNTS = ("captures", "instances", "instances_evicted", "instances_declined", "eager_calls")


def run_mode(mode, args):
    model, vocab = build(args.size, args.device, getattr(torch, args.dtype))
    ids = torch.randint(1, vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1)).to(args.device)
    if mode == "compile":
        torch._dynamo.reset()
        model.forward = torch.compile(model.forward)
    elif mode == "deepvisor":
        model.forward = deepvisor.compile(model.forward)

    def generate():
        sync(args.device)
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                             do_sample=False, pad_token_id=0)
        sync(args.device)
        return out, time.perf_counter() - t0

    with torch.no_grad():
        tokens, first = generate()
        times = [generate()[1] for _ in range(args.repeat)]
    r = {"mode": mode, "first_s": first, "steady_s": statistics.median(times), "tokens": tokens.cpu()}
    if mode == "deepvisor":
        s = deepvisor.stats(model.forward)
        r.update({k: s[k] for k in _COUNTS})
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=16, help="prompt length (default 16)")
    ap.add_argument("--new-tokens", type=int, default=24,
                    help="tokens generated (default 24; past DEEPVISOR_MAX_INSTANCES lengths, 32 by default, "
                         "deepvisor rebuilds instances)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=["eager", "compile", "deepvisor"])
    args = ap.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, GPT-2 {args.size} {args.dtype}, batch {args.batch}, "
          f"prompt {args.prompt}, {args.new_tokens} new tokens\n")
    results = [run_mode(m, args) for m in args.modes]
    eager = next((r for r in results if r["mode"] == "eager"), None)
    print("| mode | first generate s | steady generate ms | tokens/s | vs eager | same tokens as eager | "
          "captures / instances / evicted / declined / eager calls |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        same = "" if eager is None else str(torch.equal(r["tokens"], eager["tokens"]))
        ratio = "" if eager is None else f"{eager['steady_s'] / r['steady_s']:.2f}x"
        counts = " / ".join(str(r[k]) for k in _COUNTS) if "captures" in r else ""
        print(f"| {r['mode']} | {r['first_s']:.2f} | {r['steady_s'] * 1e3:.1f} | "
              f"{args.batch * args.new_tokens / r['steady_s']:.0f} | {ratio} | {same} | {counts} |")


if __name__ == "__main__":
    main()
