"""Pipelines: ordered stages with a win probability each; the default one is defined on demand."""

from __future__ import annotations

from crm_events.schemas.sales import PipelineDefined, PipelineStagesChanged, Stage
from crm_runtime.aggregate import Aggregate, applies
from crm_runtime.errors import DomainError

DEFAULT_PIPELINE_ID = "default"
DEFAULT_STAGES = [
    Stage(key="identified", name="Identified", probability=10),
    Stage(key="qualified", name="Qualified", probability=25),
    Stage(key="requirements", name="Requirements", probability=40),
    Stage(key="demo", name="Demo", probability=60),
    Stage(key="negotiation", name="Negotiation", probability=80),
    Stage(key="won", name="Won", probability=100, outcome="won"),
    Stage(key="lost", name="Lost", probability=0, outcome="lost"),
]


def check_stages(stages: list[Stage]) -> None:
    keys = [s.key for s in stages]
    if len(set(keys)) != len(keys):
        raise DomainError("stage keys must be unique")
    if not any(s.outcome == "open" for s in stages):
        raise DomainError("a pipeline needs at least one open stage")
    if (
        sum(s.outcome == "won" for s in stages) != 1
        or sum(s.outcome == "lost" for s in stages) != 1
    ):
        raise DomainError("a pipeline needs exactly one won stage and one lost stage")


class Pipeline(Aggregate):
    stream_type = "pipeline"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.name = ""
        self.stages: list[Stage] = []

    @classmethod
    def define(cls, pipeline_id: str, name: str, stages: list[Stage]) -> Pipeline:
        check_stages(stages)
        pipeline = cls(pipeline_id)
        pipeline.record(PipelineDefined(pipeline_id=pipeline_id, name=name, stages=stages))
        return pipeline

    def change_stages(self, stages: list[Stage], in_use: set[str]) -> None:
        """Replace the stages; a stage that open deals sit in cannot go away."""
        check_stages(stages)
        removed = in_use - {s.key for s in stages}
        if removed:
            raise DomainError(
                f"open deals are in stage(s) {sorted(removed)}; move them before removing",
                stages=sorted(removed),
            )
        if stages != self.stages:
            self.record(PipelineStagesChanged(pipeline_id=self.id, stages=stages))

    def stage(self, key: str) -> Stage:
        for s in self.stages:
            if s.key == key:
                return s
        raise DomainError(
            f"pipeline {self.id} has no stage {key!r}; its stages are "
            + ", ".join(s.key for s in self.stages),
            stages=[s.key for s in self.stages],
        )

    def first_open_stage(self) -> Stage:
        return next(s for s in self.stages if s.outcome == "open")

    @applies(PipelineDefined)
    def _defined(self, e: PipelineDefined) -> None:
        self.name = e.name
        self.stages = list(e.stages)

    @applies(PipelineStagesChanged)
    def _stages_changed(self, e: PipelineStagesChanged) -> None:
        self.stages = list(e.stages)
