"""DGL backend for the metanetworks (optional; needs the DGL environment).

Importing this package does not import ``dgl``; building a
:class:`DGLContext` does, with a clear error when it is not available.
"""

from weightspace.nn.dgl.gmn_conv import DGLContext, DGLGMNConv, require_dgl

__all__ = ["DGLContext", "DGLGMNConv", "require_dgl"]
