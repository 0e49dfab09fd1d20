"""The defaults of a prediction run, in a module without heavy imports: ``infer.py --help`` reads them."""

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
ENGINES = ("local", "ray")
BLOCK = 128  # records read, decoded and written together
GROUP_SIZE = 32  # records per forward pass, grouped by text length
