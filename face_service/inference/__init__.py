"""Everything about the models on Triton: their names and configs (generated from the ONNX files),
the server's flags and python backend, the HTTP client, the detector and recognizer adapters with
the SCRFD maths, the python-backend model file, and installing model packs."""
