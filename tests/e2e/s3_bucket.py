"""The SeaweedFS side of the end-to-end tests: settings that deploy to it, a client, what a bucket holds."""

from __future__ import annotations

import json
import uuid
from typing import Any, NamedTuple

import boto3

from pipeline.settings import Settings
from tests.fakes.seaweed import S3Server


def s3_settings(settings: Settings, server: S3Server) -> Settings:
    return settings.with_(s3_endpoint_url=server.endpoint, s3_access_key_id=server.access_key,
                          s3_secret_access_key=server.secret_key, s3_bucket=server.bucket, s3_region="us-east-1")


def client_of(server: S3Server) -> Any:
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


class OnS3(NamedTuple):
    settings: Settings
    s3: Any
    bucket: str
    project: str


def on_s3(settings: Settings, server: S3Server) -> OnS3:
    """`settings` deploying to `server`, a client for it, its bucket, and a project id no other test uses.

    The SeaweedFS server lives for the whole session, so a fresh project keeps each test's keys apart.
    """
    return OnS3(s3_settings(settings, server), client_of(server), server.bucket, f"p-{uuid.uuid4().hex[:8]}")


def keys_under(s3: Any, bucket: str, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def s3_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
