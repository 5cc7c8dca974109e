"""The latent explorer: a local web page to move through a trained VAE's latent space.

``vaelab explore RUN`` (or :func:`serve`) shows a slider per latent dimension, most active first,
the decoded image updating as they move, the test set's 2-D latent map (click a point to decode it),
a label selector for label-conditional models, and "encode this image" for uploads.

Stack, and why: Python's ``http.server.ThreadingHTTPServer``, a small JSON API, and one static page
of plain HTML, CSS and JavaScript shipped as package data (``static/``). The explorer is a local,
single-user tool whose work is a model call per request; a web framework (Flask, FastAPI) or a UI
toolkit (Gradio, Streamlit) would add a runtime dependency, and a bundler would add a build step,
for nothing the page needs. The split keeps each part testable on its own:

- :mod:`~vaelab.views.explore.backend`: :class:`ExplorerBackend`, everything computed (no HTTP);
- :mod:`~vaelab.views.explore.uploads`: validation and conversion of uploaded images;
- :mod:`~vaelab.views.explore.server`: routes, body limits and JSON errors, :func:`serve`.
"""

from vaelab.views.explore.backend import ExplorerBackend, LatentMap
from vaelab.views.explore.errors import RequestError
from vaelab.views.explore.server import ExplorerServer, make_server, serve

__all__ = ["ExplorerBackend", "ExplorerServer", "LatentMap", "RequestError", "make_server", "serve"]
