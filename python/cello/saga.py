"""``cello.saga``: sagas with compensation, retries and persisted state — built by issue 16.

The names exist so published apps import; using them raises ``FeatureNotAvailable``.
"""

from ._unavailable import FeatureNotAvailable, install

__all__ = [
    "FeatureNotAvailable",
    *install(globals(), 16, ["Saga", "SagaStep", "SagaExecution", "SagaOrchestrator", "SagaError", "StepStatus"]),
]
