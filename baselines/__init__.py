"""Everything the paper compares the Saccader against: policies, DRAM, ResNet-v2-50, BagNet-77, NASNet, attacks.
Depends on the method (``saccader``), never on ``saccader.pipeline``."""
