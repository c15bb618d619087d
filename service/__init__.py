"""HTTP service around `episodic_koopman`: push observations, read and stream forecasts.

`service.main.create_app` builds the FastAPI application; ``episodic-koopman serve``
runs it under uvicorn. The library itself never imports anything from here.
"""
