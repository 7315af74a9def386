"""Names FiffDepth's pipeline class for diffusers (issue 16).

``DiffusionPipeline.from_pretrained(this_directory, trust_remote_code=True)`` reads
``model_index.json``'s ``_class_name`` ["fiffdepth_pipeline", "FiffDepthPipeline"] and imports this file; the
class itself comes from the installed ``fiffdepth`` package (``pip install fiffdepth``).
"""

from fiffdepth.pipeline import FiffDepthPipeline  # noqa: F401
