"""MobileNetV2 (weights=None) int8 vs fp32 TFLite p50 at 1 thread, with edgecnn convert's static batch-1 artifacts.

Converts once into /tmp/mb2 (random weights, 64 random calibration images: speed only), then times
interpreter.invoke() in a plain loop, 3 rounds of 300. Run: .venv/bin/python benchmarks/mobilenet_int8_ratio.py
"""
import os, time, numpy as np; os.environ["TF_CPP_MIN_LOG_LEVEL"]="2"
from pathlib import Path
from edgecnn.converters.pipeline import convert, ConvertOptions
from edgecnn.converters.formats import parse_formats
import keras
from edgecnn.converters.zoo import mobilenet_v2
out=Path("/tmp/mb2"); 
if not (out/"manifest.json").exists():
    keras.utils.set_random_seed(0)
    m=mobilenet_v2(); m.save("/tmp/mb2.keras")
    rng=np.random.default_rng(0); np.save("/tmp/mb2calib.npy", rng.integers(0,256,(64,224,224,3),dtype=np.uint8))
    r=convert("/tmp/mb2.keras", calib="/tmp/mb2calib.npy", val=None, out=out, options=ConvertOptions(progress=False, force=True, formats="tflite-fp32,tflite-int8"))
from ai_edge_litert.interpreter import Interpreter
def p50(path):
    it=Interpreter(model_path=str(path), num_threads=1); it.allocate_tensors()
    d=it.get_input_details()[0]; x=np.zeros(d["shape"],d["dtype"]); it.set_tensor(d["index"],x)
    for _ in range(20): it.invoke()
    ts=[]
    for _ in range(300):
        t=time.perf_counter(); it.invoke(); ts.append(time.perf_counter()-t)
    return np.median(ts)*1e3
for r in range(3):
    f=p50(out/"mobilenetv2_1.00_224_fp32.tflite" if (out/"mobilenetv2_1.00_224_fp32.tflite").exists() else sorted(out.glob("*fp32.tflite"))[0]); q=p50(sorted(out.glob("*int8.tflite"))[0])
    print(f"fp32 {f:.3f} ms int8 {q:.3f} ms ratio {q/f:.3f}")
