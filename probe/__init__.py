"""probe: which discrete codes in which layer of a network go with which labels.

Public names:
    analyze         NPMI, entropy and MI of (n, P) integer codes against (n,) labels
    load            open a result file written by ``python -m probe.run``
    AnalysisResult  what ``analyze`` returns and ``load`` gives per layer
    JointCounter    the streaming tensor counter behind both
    entropy_bits, mutual_information_bits   plug-in H and I, in bits, of count tables

The NPMI of a joint count table is ``probe.stats.npmi``; ``probe.npmi`` is the
command-line module ``python -m probe.npmi``.
    value_hits      per label or attribute value, the codes, symbols and n-grams above a threshold
    read_observations  read user attributes from CSV or .npy

Example::

    import probe
    result = probe.analyze(codes, labels)
    result.hits(threshold=0.4)[:5]

    with probe.load("runs/default/probe.h5") as run:
        run.layers["latent"].result.stats
"""

from .analysis import AnalysisResult, Hit, ObservationCounter, PositionalNPMI, WholeCodeNPMI, analyze
from .associations import ValueHit, value_hits
from .counting import JointCounter
from .ngrams import NgramCounter, NgramNPMI, PositionalNgramNPMI
from .observations import Attribute, ObservationError, read_observations
from .stats import entropy_bits, mutual_information_bits
from .store import ProbeFile, StoreError, load

__all__ = [
    "analyze",
    "load",
    "AnalysisResult",
    "WholeCodeNPMI",
    "PositionalNPMI",
    "Hit",
    "JointCounter",
    "ObservationCounter",
    "NgramCounter",
    "NgramNPMI",
    "PositionalNgramNPMI",
    "Attribute",
    "ObservationError",
    "read_observations",
    "ValueHit",
    "value_hits",
    "entropy_bits",
    "mutual_information_bits",
    "ProbeFile",
    "StoreError",
]
