"""Which artifact store a pipeline uses on the cluster, opened with the operator's own
credentials (its environment, from a Secret); the operator never reads other Secrets' data."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from conveyor.api.common import S3Store as S3Spec
from conveyor.api.pipeline import PipelineSpec
from conveyor.artifacts.store import S3Store, Store, make_s3_client
from conveyor.artifacts.uri import split_s3
from conveyor.engine.validation import InvalidResource, Problem, pydantic_problems
from conveyor.kube.settings import Settings


class StoreResolver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[tuple[str | None, str | None], Any] = {}

    def spec_for(self, spec: PipelineSpec) -> S3Spec:
        if spec.artifacts and spec.artifacts.s3:
            return spec.artifacts.s3
        default = split_s3(self.settings.store) if self.settings.store else None
        if default is not None:
            bucket, prefix = default
            try:
                return S3Spec(bucket=bucket, prefix=prefix, endpoint=self.settings.s3_endpoint)
            except ValidationError as err:
                raise InvalidResource(pydantic_problems(err, "CONVEYOR_STORE")) from None
        raise InvalidResource(
            [
                Problem(
                    "spec.artifacts.s3",
                    "no artifact store: the pipeline names none and the operator has no default",
                    "set spec.artifacts.s3, or CONVEYOR_STORE on the operator",
                )
            ]
        )

    def spec_for_uri(self, uri: str) -> S3Spec:
        """The store of a model given by URI, reached with the operator's S3 settings."""
        where = split_s3(uri)
        if where is None:
            raise InvalidResource(
                [
                    Problem(
                        "spec.model.uri",
                        f"{uri!r} is not an s3:// URI",
                        "serve a model from the artifact store (s3://bucket/...)",
                    )
                ]
            )
        try:
            # its Secrets are the operator's (manifests.secrets_of)
            return S3Spec(bucket=where[0], endpoint=self.settings.s3_endpoint)
        except ValidationError as err:
            raise InvalidResource(pydantic_problems(err, "spec.model.uri")) from None

    def for_pipeline(self, spec: PipelineSpec) -> tuple[Store, S3Spec]:
        s3 = self.spec_for(spec)
        endpoint = s3.endpoint or self.settings.s3_endpoint
        key = (endpoint, s3.region)
        if key not in self._clients:
            self._clients[key] = make_s3_client(endpoint, s3.region)
        return S3Store(s3.bucket, s3.prefix, client=self._clients[key]), s3
