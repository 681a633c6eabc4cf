"""The benchmark behind `fastlstm bench` and the pytest-benchmark suite in bench/.

Modules (each importable without onnxruntime, torch or matplotlib; those are imported lazily):
    models      one fixed-seed spec per size, converted once for every engine
    peers       fastlstm / ONNX Runtime / PyTorch / roofline proxy behind one small interface
    measure     interleaved timing, medians
    isolated    multi-threaded rows with each engine in a child process of its own
    streams     batched step (B streams per call) and two Python threads sharing an engine
    plan_report the kernel plan and thread crossovers the sweep ran with
    coldstart   fresh-subprocess cold start and peak memory
    report      table, report.md, results.json, plot
    cli         run_bench(): the sweep
"""
