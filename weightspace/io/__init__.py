"""Reading and writing weights safely (safetensors; ``torch.load(weights_only=True)``)."""

from weightspace.io.weights import load_state_dict, save_state_dict, state_dict_hash

__all__ = ["load_state_dict", "save_state_dict", "state_dict_hash"]
