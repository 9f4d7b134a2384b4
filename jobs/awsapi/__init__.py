"""anyjob's SageMaker-compatible API: AWS's wire protocols under one endpoint URL (``/aws/``).

Existing boto3, AWS CLI and SageMaker SDK code runs against anyjob by setting
``AWS_ENDPOINT_URL``. Every request is SigV4-verified against a user's access key
(``jobs.awsapi.models.AccessKey``); what it does is done as that user.

Modules:
    ``registry`` — the operation table and the error every handler raises (``ApiError``).
    ``sigv4`` / ``views`` — verification and protocol dispatch (JSON, REST-JSON, query, REST-XML).
    ``sagemaker_ops``, ``runtime_ops``, ``logs_ops``, ``identity_ops`` — JSON/query operations.
    ``s3`` — the S3 REST-XML service over anyjob's artifact store.
"""
