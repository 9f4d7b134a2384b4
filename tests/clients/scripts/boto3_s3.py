"""boto3's S3 against anyjob: buckets, objects (ranges, multipart, copies, deletes) and errors."""

import io
import os
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from common import done, error_code, error_of, found, step

bucket = sys.argv[1]
s3 = boto3.client("s3")

with step("create_bucket"):
    s3.create_bucket(Bucket=bucket)
    found["create_again"] = error_of(lambda: s3.create_bucket(Bucket=bucket))
    found["head_bucket"] = s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"]
    found["listed_bucket"] = bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    found["location"] = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")

data = os.urandom(3 * 1024 * 1024 + 17)
with step("put_get"):
    s3.put_object(Bucket=bucket, Key="blobs/one.bin", Body=data)
    found["roundtrip"] = s3.get_object(Bucket=bucket, Key="blobs/one.bin")["Body"].read() == data
    part = s3.get_object(Bucket=bucket, Key="blobs/one.bin", Range="bytes=10-19")
    found["range"] = part["Body"].read() == data[10:20]
    found["range_status"] = part["ResponseMetadata"]["HTTPStatusCode"]
    found["head_length"] = s3.head_object(Bucket=bucket, Key="blobs/one.bin")["ContentLength"]

big = os.urandom(12 * 1024 * 1024 + 5)
with step("multipart"):
    five = 5 * 1024 * 1024
    config = TransferConfig(multipart_threshold=five, multipart_chunksize=five)
    s3.upload_fileobj(io.BytesIO(big), bucket, "blobs/big.bin", Config=config)
    buf = io.BytesIO()
    s3.download_fileobj(bucket, "blobs/big.bin", buf, Config=config)
    found["multipart_roundtrip"] = buf.getvalue() == big

with step("copy_list_delete"):
    s3.copy_object(Bucket=bucket, Key="blobs/copy.bin", CopySource={"Bucket": bucket, "Key": "blobs/one.bin"})
    found["copy_same"] = s3.get_object(Bucket=bucket, Key="blobs/copy.bin")["Body"].read() == data
    found["listed"] = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="blobs/")["Contents"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    found["paged"] = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    deleted = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "blobs/copy.bin"}, {"Key": "blobs/big.bin"}]}
    )
    found["deleted"] = sorted(d["Key"] for d in deleted.get("Deleted", []))
    s3.delete_object(Bucket=bucket, Key="blobs/one.bin")
    found["left"] = s3.list_objects_v2(Bucket=bucket, Prefix="blobs/").get("KeyCount")

with step("errors"):
    found["missing_key"] = error_code(lambda: s3.get_object(Bucket=bucket, Key="blobs/one.bin"))
    found["missing_bucket"] = error_code(lambda: s3.list_objects_v2(Bucket=bucket + "-nope"))
    found["bad_bucket_name"] = error_code(lambda: s3.create_bucket(Bucket="Bad_Bucket_Name"))
    found["dotdot_key"] = error_code(
        lambda: s3.put_object(Bucket=bucket, Key="a/../../etc/passwd", Body=b"x")
    )
    found["long_key"] = error_code(lambda: s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x"))

done()
