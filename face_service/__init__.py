"""The face recognition service below its entry modules (app.py, pipeline.py, triton_service.py,
extract_insightface_models.py):

- ``api``: the HTTP layer: routes per resource, their schemas, dependencies, uploads, limits;
- ``inference``: everything about the models on Triton: configs, the client, the detector and
  recognizer adapters, SCRFD maths, the python-backend model file, model packs;
- ``gallery``: people, templates, 1:N search and detection records (SQLite or PostgreSQL);
- ``faces``, ``analysis``, ``imaging``, ``drawing``: the values and pure steps the pipeline uses;
- ``enrollment``, ``identification``: the gallery-facing features on top of the pipeline;
- ``settings``, ``errors``: every setting, and the one error hierarchy;
- ``testing``: the service as a child process, for tests and benchmarks (not in the image).
"""
