"""INT8 weights on CPUs with and without VNNI: how far each quantisation is from the eager model, its macro-F1
and its speed.

    python bench/bench_int8.py dump RUN ARCHIVE OUT [--limit N]
    python bench/bench_int8.py compare OUT/batches.npz OUT/*.onnx
    valgrind --tool=none python bench/bench_int8.py compare OUT/batches.npz OUT/*.onnx
    python bench/bench_int8.py speed OUT/batches.npz OUT/int8_8bit.onnx OUT/int8_7bit.onnx
    python bench/bench_int8.py saturation

``dump`` (natively): the run's float graph and three dynamic quantisations of it (8-bit int8 weights, 7-bit
int8 weights as the export makes them, uint8 weights) under OUT, and ``batches.npz``: the export's check
batches and the ARCHIVE's records in batches of 64, with the eager model's outputs and the records' labels.

``compare``: each graph's largest difference from the eager outputs, on the check batches and on the records,
and its macro-F1 on the records (mean over the tasks). It needs onnxruntime only, so it runs under valgrind,
whose CPU has no AVX-512 or VNNI: onnxruntime then takes its AVX2 kernels, as on a CPU without VNNI.

``speed``: records/s of each graph on the records, one thread, alternated, best of 5 rounds.

``saturation``: a one-node MatMulInteger whose pairs of uint8 x int8 products pass 32,767: its exact sum, and
what onnxruntime gives (natively and under valgrind).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

QUANTISATIONS = {  # file stem -> quantize_dynamic's arguments
    "int8_8bit": dict(weight_type="QInt8"),
    "int8_7bit": dict(weight_type="QInt8", reduce_range=True),
    "uint8": dict(weight_type="QUInt8"),
}


def dump(run_dir: Path, archive_path: Path, out: Path, limit: int) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pipeline.data.archive import open_archive
    from pipeline.data.dataset import ComplaintDataset
    from pipeline.data.manifest import read_records
    from pipeline.export.onnx import ExportedForward, check_batches, trace
    from pipeline.models.trained_run import load_run

    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    trace(run, out / "float.onnx")
    logging.getLogger().setLevel(logging.ERROR)
    for stem, options in QUANTISATIONS.items():
        options = {**options, "weight_type": getattr(QuantType, options["weight_type"])}
        quantize_dynamic(
            str(out / "float.onnx"),
            str(out / f"{stem}.onnx"),
            op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
            **options,
        )
    batches = [("check", batch) for _, batch in check_batches(run)]
    archive = open_archive(archive_path)
    records = list(read_records(archive, run.columns))[:limit]
    dataset, collate = ComplaintDataset(records, archive, run.featurizer()), run.collator()
    for start in range(0, len(dataset), 64):
        batches.append(("records", collate([dataset[i] for i in range(start, min(start + 64, len(dataset)))])))
    forward = ExportedForward(run.model.cpu().eval())
    arrays = {}
    with torch.no_grad():
        for k, (kind, batch) in enumerate(batches):
            for name in forward.inputs:
                arrays[f"{k}:{kind}:in:{name}"] = batch[name].numpy()
            for j, output in enumerate(forward(*[batch[n] for n in forward.inputs])):
                arrays[f"{k}:{kind}:out:{j}"] = output.numpy()
    for t, task in enumerate(run.model.model.tasks):
        classes = run.labels.classes[task]
        arrays[f"labels:{t}"] = np.array(
            [
                classes.index(str(r.labels[task]))
                if r.labels.get(task) is not None and str(r.labels[task]) in classes
                else -1
                for r in records
            ]
        )
    np.savez(out / "batches.npz", **arrays)
    print(f"{out}: float.onnx, {', '.join(f'{s}.onnx' for s in QUANTISATIONS)}; batches.npz: {len(records)} records")


def batch_keys(data, kind: str | None = None) -> list[str]:
    keys = sorted({k.rsplit(":", 2)[0] for k in data.files if ":in:" in k}, key=lambda k: int(k.split(":")[0]))
    return [k for k in keys if kind is None or k.endswith(f":{kind}")]


def session(graph: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def macro_f1(data, outputs: list[list[np.ndarray]]) -> float:
    from sklearn.metrics import f1_score

    scores = []
    for t in range(len([k for k in data.files if k.startswith("labels:")])):
        labels = data[f"labels:{t}"]
        predicted = np.concatenate([o[t] for o in outputs]).argmax(1)
        known = labels >= 0
        scores.append(f1_score(labels[known], predicted[known], average="macro"))
    return float(np.mean(scores))


def compare(npz: Path, graphs: list[str]) -> None:
    data = np.load(npz)
    for graph in graphs:
        s = session(graph)
        names = [i.name for i in s.get_inputs()]
        worst, records = {"check": 0.0, "records": 0.0}, []
        for key in batch_keys(data):
            got = s.run(None, {n: data[f"{key}:in:{n}"] for n in names})
            kind = key.split(":")[1]
            worst[kind] = max(
                worst[kind], *(float(np.abs(g - data[f"{key}:out:{j}"]).max()) for j, g in enumerate(got))
            )
            if kind == "records":
                records.append(got)
        print(
            f"{Path(graph).name}: largest difference from eager {worst['check']:.4f} on the check batches, "
            f"{worst['records']:.4f} on the records; records macro-F1 {macro_f1(data, records):.4f}",
            flush=True,
        )
    eager = [
        [data[f"{k}:out:{j}"] for j in range(len([f for f in data.files if f.startswith(f"{k}:out:")]))]
        for k in batch_keys(data, "records")
    ]
    print(f"eager: records macro-F1 {macro_f1(data, eager):.4f}")


def speed(npz: Path, graphs: list[str], rounds: int = 5) -> None:
    data = np.load(npz)
    keys = batch_keys(data, "records")
    feeds = {}
    for graph in graphs:
        s = session(graph)
        feeds[graph] = (s, [{i.name: data[f"{k}:in:{i.name}"] for i in s.get_inputs()} for k in keys])
    records = sum(len(next(iter(f.values()))) for f in feeds[graphs[0]][1])
    best = dict.fromkeys(graphs, 0.0)
    for _ in range(rounds):
        for graph, (s, batches) in feeds.items():
            started = time.perf_counter()
            for feed in batches:
                s.run(None, feed)
            best[graph] = max(best[graph], records / (time.perf_counter() - started))
    for graph in graphs:
        print(f"{Path(graph).name}: {best[graph]:.0f} records/s ({records} records, 1 thread, best of {rounds})")


def saturation() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    terms = 64
    a, b = np.full((1, terms), 255, np.uint8), np.full((terms, 1), 127, np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "saturation",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [1, terms])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [1, 1])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    exact = int((a.astype(np.int64) @ b.astype(np.int64))[0, 0])
    print(f"MatMulInteger 255 x 127 over {terms} terms: onnxruntime {int(got[0, 0]):,}, exact {exact:,}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("run", type=Path)
    d.add_argument("archive", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--limit", type=int, default=10**9, help="records of the archive to use")
    for name in ("compare", "speed"):
        c = sub.add_parser(name)
        c.add_argument("npz", type=Path)
        c.add_argument("graphs", nargs="+")
    sub.add_parser("saturation")
    args = p.parse_args()
    if args.command == "dump":
        dump(args.run, args.archive, args.out, args.limit)
    elif args.command == "compare":
        compare(args.npz, args.graphs)
    elif args.command == "speed":
        speed(args.npz, args.graphs)
    else:
        saturation()


if __name__ == "__main__":
    main()
