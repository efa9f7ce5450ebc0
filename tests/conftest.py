from __future__ import annotations

import torch

# Tests run on a 2-core CI machine; one intra-op thread keeps tiny models fast and runs deterministic.
torch.set_num_threads(1)
