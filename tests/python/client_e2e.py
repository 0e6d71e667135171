#!/usr/bin/env python3
"""A Python gRPC client against a running Hangar server, with stubs generated from proto/ now.

usage: client_e2e.py ADDR MODEL_NAME

Exercises LoadModel by name, ListModels, Generate, GenerateStream, Tokenize/Detokenize,
ApplyChatTemplate, the bidirectional Stream with four interleaved requests (one cancelled
midway), and UnloadModel. Exits non-zero with a message on the first failed check.
"""

import os
import queue
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(ROOT, "proto")


def generate_stubs(out):
    files = [os.path.join("hangar", "v1", f) for f in ("inference.proto", "models.proto", "generate.proto", "text.proto")]
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--python_out={out}", f"--grpc_python_out={out}"] + files
    subprocess.run(cmd, check=True, cwd=PROTO)
    # protoc writes packages without __init__.py; Python 3 namespace packages import fine.
    sys.path.insert(0, out)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    addr, model = sys.argv[1], sys.argv[2]
    out = tempfile.mkdtemp(prefix="hangar-stubs-")
    generate_stubs(out)
    import grpc
    from hangar.v1 import generate_pb2, inference_pb2_grpc, models_pb2, text_pb2

    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = inference_pb2_grpc.InferenceStub(channel)

    info = stub.LoadModel(models_pb2.LoadModelRequest(name=model), timeout=120)
    check(info.name == model and info.architecture == "llama", f"LoadModel by name -> {info.architecture}, ctx {info.context_length}")
    check(info.tokenizer.vocab_size == 49152 and info.has_chat_template, "ModelInfo has tokenizer facts and the chat template")

    listed = {m.name: m for m in stub.ListModels(models_pb2.ListModelsRequest()).models}
    check(listed[model].state == models_pb2.MODEL_STATE_READY and listed[model].memory_bytes > 0, "ListModels shows it READY with its memory")

    def request(prompt, rid="", max_tokens=12, seed=7):
        return generate_pb2.GenerateRequest(
            model=model,
            prompt=prompt,
            request_id=rid,
            sampling=generate_pb2.SamplingParams(temperature=0.7, seed=seed),
            stopping=generate_pb2.StoppingCriteria(max_tokens=max_tokens),
        )

    prompt = "The three primary colors are"
    unary = stub.Generate(request(prompt), timeout=120)
    check(len(unary.token_ids) == unary.usage.completion_tokens > 0 and unary.text, f"Generate -> {unary.text!r}")
    check(unary.seed == 7 and unary.stop_reason in (generate_pb2.STOP_REASON_LENGTH, generate_pb2.STOP_REASON_EOS), "Generate reports seed and stop reason")

    events = list(stub.GenerateStream(request(prompt), timeout=120))
    streamed = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    check(events[-1].WhichOneof("event") == "complete", "GenerateStream ends with complete")
    check(streamed == unary.text, f"streamed text equals unary text for the same seed ({streamed!r})")

    tok = stub.Tokenize(text_pb2.TokenizeRequest(model=model, text="Hello world"))
    check(len(tok.token_ids) >= 2 and "".join(tok.pieces).replace("\u0120", " ") != "", f"Tokenize -> {list(tok.token_ids)}")
    detok = stub.Detokenize(text_pb2.DetokenizeRequest(model=model, token_ids=tok.token_ids))
    check(detok.text == "Hello world", "Detokenize round-trips Tokenize")
    chat = stub.ApplyChatTemplate(text_pb2.ApplyChatTemplateRequest(
        model=model, messages=[text_pb2.ChatMessage(role="user", content="Hi")], add_generation_prompt=True))
    check("<|im_start|>assistant" in chat.text, "ApplyChatTemplate renders the model's template")

    # Four requests interleaved on one Stream; r2 is cancelled once its first token arrives.
    outbox = queue.Queue()
    prompts = {f"r{i}": p for i, p in enumerate([prompt, "Once upon a time", "def fib(n):", "Paris is"])}

    def requests():
        while True:
            m = outbox.get()
            if m is None:
                return
            yield m

    responses = stub.Stream(requests(), timeout=300)
    for rid in ("r0", "r1"):
        outbox.put(generate_pb2.StreamRequest(generate=request(prompts[rid], rid, max_tokens=12)))
    per = {rid: [] for rid in prompts}
    sent_rest = False
    cancel_sent_at = None
    done = set()
    for ev in responses:
        per[ev.request_id].append(ev)
        kind = ev.WhichOneof("event")
        if kind == "error":
            check(False, f"no error event, got {ev.error.code}: {ev.error.message}")
        if not sent_rest and ev.request_id == "r0":
            # The rest are sent while r0 is generating, so requests interleave on the stream.
            for rid, n in (("r2", 40), ("r3", 12)):
                outbox.put(generate_pb2.StreamRequest(generate=request(prompts[rid], rid, max_tokens=n)))
            sent_rest = True
        if ev.request_id == "r2" and kind == "delta" and cancel_sent_at is None:
            outbox.put(generate_pb2.StreamRequest(cancel=generate_pb2.Cancel(request_id="r2")))
            cancel_sent_at = len(per["r2"])
        if kind == "complete":
            done.add(ev.request_id)
            if done == set(prompts):
                outbox.put(None)
    check(done == set(prompts), "all four Stream requests completed")
    for rid, evs in per.items():
        kinds = [e.WhichOneof("event") for e in evs]
        check(kinds[-1] == "complete" and kinds.count("complete") == 1 and all(k == "delta" for k in kinds[:-1]),
              f"{rid}: deltas in order, then one complete")
    r2 = per["r2"][-1].complete
    check(r2.stop_reason == generate_pb2.STOP_REASON_CANCELLED, "r2 was cancelled")
    after = len(per["r2"]) - 1 - cancel_sent_at
    check(r2.usage.completion_tokens < 40 and after <= 3, f"r2 stopped within a decode step of the cancel ({after} deltas after it)")
    for rid in ("r0", "r1", "r3"):
        check(per[rid][-1].complete.stop_reason != generate_pb2.STOP_REASON_CANCELLED, f"{rid} was not cancelled")
    r0_text = "".join(e.delta.text for e in per["r0"] if e.WhichOneof("event") == "delta")
    check(r0_text == unary.text, "Stream r0 equals the unary answer for the same seed")

    unloaded = stub.UnloadModel(models_pb2.UnloadModelRequest(name=model))
    check(unloaded.name == model, "UnloadModel")
    listed = {m.name: m for m in stub.ListModels(models_pb2.ListModelsRequest()).models}
    check(listed[model].state == models_pb2.MODEL_STATE_AVAILABLE, "after UnloadModel it is AVAILABLE, not loaded")
    try:
        stub.Generate(request(prompt), timeout=30)
        check(False, "Generate after unload fails")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION and "LoadModel" in e.details(), f"Generate after unload -> {e.code()}: {e.details()}")
    print("PYTHON CLIENT OK")


if __name__ == "__main__":
    main()
