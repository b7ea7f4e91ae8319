"""Loaders for published zoos (the user supplies the path; nothing is downloaded).

* :mod:`zoo.loaders.small_cnn_zoo` -- Small CNN Zoo (Unterthiner et al. 2020).
* :mod:`zoo.loaders.model_zoos` -- model-zoos.cc style Ray Tune directories (Schürholt et al. 2022).
* :mod:`zoo.loaders.inr` -- DWSNets-style and NFN-style SIREN INR zoos.

Each offers ``load_*`` (an iterator of :class:`ImportedMember`, nothing written)
and ``import_*`` (written into a weightspace zoo directory, returns a :class:`~zoo.store.Zoo`).
"""

from zoo.loaders._common import ImportedMember
from zoo.loaders.inr import import_inr_zoo, inr_state_dict_to_siren, load_dwsnets_inrs, load_nfn_sirens
from zoo.loaders.model_zoos import import_model_zoos, load_model_zoos
from zoo.loaders.small_cnn_zoo import (
    import_small_cnn_zoo,
    load_small_cnn_zoo,
    read_layout,
    tf_vector_to_state_dict,
)

__all__ = [
    "ImportedMember",
    "import_inr_zoo",
    "import_model_zoos",
    "import_small_cnn_zoo",
    "inr_state_dict_to_siren",
    "load_dwsnets_inrs",
    "load_model_zoos",
    "load_nfn_sirens",
    "load_small_cnn_zoo",
    "read_layout",
    "tf_vector_to_state_dict",
]
