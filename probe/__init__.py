"""probe: which discrete codes in which layer of a network go with which labels.

Public names:
    analyze         NPMI, entropy and MI of (n, P) integer codes against (n,) labels
    load            open a result file written by ``python -m probe.run``
    AnalysisResult  what ``analyze`` returns and ``load`` gives per layer
    JointCounter    the streaming tensor counter behind both
    npmi            NPMI of a joint count table

Example::

    import probe
    result = probe.analyze(codes, labels)
    result.hits(threshold=0.4)[:5]

    with probe.load("runs/default/probe.h5") as run:
        run.layers["latent"].result.stats
"""

from .analysis import AnalysisResult, Hit, PositionalNPMI, WholeCodeNPMI, analyze
from .counting import JointCounter
from .stats import entropy_bits, mutual_information_bits, npmi
from .store import ProbeFile, StoreError, load

__all__ = [
    "analyze",
    "load",
    "AnalysisResult",
    "WholeCodeNPMI",
    "PositionalNPMI",
    "Hit",
    "JointCounter",
    "npmi",
    "entropy_bits",
    "mutual_information_bits",
    "ProbeFile",
    "StoreError",
]
