"""Translate boto3/botocore failures into one-line ProviderErrors that say what to do next.

Every AWS call in the EC2 provider runs inside `aws_errors(action)`; nothing from botocore
escapes it (only swarm errors and KeyboardInterrupt do).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from swarm.errors import ProviderError, SwarmError
from swarm.providers.ec2 import quotas

MAX_DETAIL = 200
MAX_LINE = 400
ENCODED = " Encoded authorization failure message: "
# AWS's text for the old way of asking for more: the quota's page replaces it
_ADJUSTMENT = re.compile(r"\s*Please visit \S+ to request an adjustment to this limit\.?")
_DENY = re.compile(r"with an explicit deny in (an? [A-Za-z -]+?)\.?$")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, or of a WaiterError's last answer ('' for
    anything else)."""
    response = getattr(exc, "response", None) or getattr(exc, "last_response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "")
    return ""


def transport_error(exc: BaseException) -> str:
    """The name of a botocore transport error (the connection failed or was cut: no AWS answer,
    so no AWS code), '' for anything else."""
    from botocore import exceptions as bx

    return type(exc).__name__ if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)) else ""


def _one_line(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def aws_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message") or "")
    return ""


def _message(exc: BaseException, limit: int = MAX_DETAIL) -> str:
    msg = aws_message(exc)
    if msg:
        # UnauthorizedOperation appends a huge encoded blob: keep the readable part.
        msg = msg.split(ENCODED.rstrip(": "))[0].removeprefix(
            "You are not authorized to perform this operation. "
        )
        return _one_line(_ADJUSTMENT.sub("", msg), limit)
    return _one_line(str(exc), limit)


def _denied(exc: BaseException) -> tuple[str | None, str | None]:
    """(the policy an explicit deny came from, the encoded authorization failure message) of
    an authorization failure; either None where AWS did not say."""
    readable, _, encoded = aws_message(exc).partition(ENCODED)
    deny = _DENY.search(" ".join(readable.split()))
    return (deny.group(1) if deny else None), (encoded.split()[0] if encoded.strip() else None)


def _not_allowed(exc: BaseException, code: str, action: str, where: str) -> str:
    deny, encoded = _denied(exc)
    if deny:
        step = (
            f"granting permissions does not lift an explicit deny in {deny}; ask whoever "
            "manages it what it requires"
        )
    else:
        step = (
            "grant this IAM identity the EC2/SSM permissions swarm needs, or use another "
            "[ec2] profile"
        )
    if encoded:
        # The one place AWS says which statement denied it: the user needs the whole blob.
        step += (
            ", and see which statement denies it with `aws sts decode-authorization-message "
            f"--encoded-message {encoded} --query DecodedMessage --output text`"
        )
    detail = f": {_message(exc, 300)}" if encoded or deny else ""
    return f"not allowed to {action}{where} ({code}{detail}): {step}"


def translate(
    exc: BaseException, action: str, region: str | None = None, instance_type: str | None = None
) -> ProviderError:
    """Map one botocore/boto3 exception to a ProviderError with the next step in it.
    `instance_type`: of a launch, so a quota error can name its quota."""
    from botocore import exceptions as bx

    where = f" in {region}" if region else ""
    code = error_code(exc)
    msg = _message(exc)
    generic = False  # no next step of its own: the text ends with AWS's message
    limit = MAX_LINE
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        text = (
            f"no AWS credentials found while trying to {action}: run `aws configure` "
            "(or `aws sso login`), or set [ec2] profile / AWS_PROFILE"
        )
    elif isinstance(exc, bx.ProfileNotFound):
        text = f"AWS profile not found ({msg}): fix [ec2] profile or AWS_PROFILE, see ~/.aws/config"
    elif isinstance(exc, bx.NoRegionError):
        text = 'no AWS region configured: set [ec2] region (e.g. "eu-west-1") or AWS_DEFAULT_REGION'
    elif (
        isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError))
        or code == "UnknownRegion"
    ):
        text = (
            f"cannot reach the AWS EC2 endpoint{where} while trying to {action}: check that "
            "[ec2] region is a real region enabled for your account, and your network"
        )
    elif isinstance(exc, (bx.TokenRetrievalError, bx.SSOTokenLoadError)) or code in (
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    ):
        text = (
            f"AWS credentials expired while trying to {action}: refresh them "
            "(e.g. `aws sso login`) and retry"
        )
    elif code == "AuthFailure.ServiceLinkedRoleCreationNotPermitted":
        text = (
            f"cannot {action}{where} on spot ({code}: {msg}): create the Spot "
            "service-linked role once per account with `aws iam create-service-linked-role "
            "--aws-service-name spot.amazonaws.com` (or grant iam:CreateServiceLinkedRole), "
            "or set [ec2] spot = false"
        )
        limit = 2 * MAX_LINE
    elif code in (
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    ):
        text = (
            f"AWS rejected the credentials while trying to {action} ({code}): check the keys "
            "of [ec2] profile / AWS_PROFILE"
        )
    elif code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        text = _not_allowed(exc, code, action, where)
        limit = len(text)  # one line, however long the encoded message
    elif code.startswith("InvalidAMIID"):
        text = (
            f"AMI not usable{where} ({code}: {msg}): set [ec2] ami to an alias "
            "(ubuntu-24.04, ubuntu-22.04, al2023) or an ami-… id that exists in this region"
        )
    elif code.startswith("InvalidSubnetID") or code == "InvalidSubnet":
        text = (
            f"subnet not found{where} ({code}: {msg}): fix [ec2] subnet_id, or leave it out "
            "to use the default VPC"
        )
    elif code in ("InsufficientInstanceCapacity", "InsufficientCapacity", "UnfulfillableCapacity"):
        text = (
            f"AWS has no capacity right now{where} to {action} ({code}): retry later, pick "
            "another [ec2] master_type/worker_type, or a subnet_id in another zone"
        )
    elif code in quotas.QUOTA_CODES:
        text = (
            f"your account's EC2 quota is reached{where}, so swarm cannot {action} ({code}: "
            f"{msg}): {quotas.advice(code, instance_type, region)}"
        )
        limit = 2 * MAX_LINE  # AWS's message (the limit) and the quota's name and page
    elif code in ("InvalidInstanceType", "Unsupported"):
        text = f"{code}{where}: {msg}: pick another [ec2] master_type/worker_type"
    elif code in ("InvalidGroup.NotFound", "InvalidKeyPair.NotFound", "InvalidInstanceID.NotFound"):
        # only after a minute of retries (aws.JUST_CREATED): not the user's mistake
        text = (
            f"AWS still does not find what swarm created a minute ago{where} while trying to "
            f"{action} ({code}: {msg}; EC2 is eventually consistent): run the command again; "
            "`swarm down` removes anything made so far"
        )
    elif code == "InvalidKeyPair.Format":
        text = f"key pair problem{where} ({code}: {msg}): fix [ec2] key_name, or leave it out"
    elif code == "DependencyViolation":
        text = (
            f"cannot {action}{where} yet ({msg}): instances are still shutting down; "
            "retry in a minute"
        )
    elif code in ("RequestLimitExceeded", "Throttling", "ThrottlingException"):
        text = f"AWS throttled the requests to {action}{where} ({code}): wait a minute and retry"
    elif code:
        text, generic = f"AWS error {code} while trying to {action}{where}: {msg}", True
    elif type(exc).__name__ == "ResponseParserError":
        text = (
            f"the EC2 endpoint{where} answered with something that is not an AWS response "
            f"(an HTML error page?) while trying to {action}: check AWS_ENDPOINT_URL and any "
            "proxy, or retry later"
        )
    elif isinstance(exc, bx.BotoCoreError):
        text, generic = f"AWS call failed while trying to {action}{where}: {msg}", True
    else:
        text = f"unexpected error while trying to {action}{where}: {type(exc).__name__}: {msg}"
        generic = True
    return ProviderError(
        _one_line(text, limit),
        code=code or None,
        action=None if generic else text.rsplit(": ", 1)[-1],
    )


@contextmanager
def aws_errors(
    action: str, region: str | None = None, instance_type: str | None = None
) -> Iterator[None]:
    """Run a block of AWS calls; re-raise any botocore failure as a one-line ProviderError."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError  # not a BotoCoreError

    try:
        yield
    except SwarmError:
        raise
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        raise translate(exc, action, region, instance_type) from exc


@contextmanager
def expect(code: str, message: str) -> Iterator[None]:
    """A block in which one AWS error code means a known mistake: it becomes
    ProviderError(message) (chained, with its code); any other error passes through."""
    try:
        yield
    except Exception as exc:
        if error_code(exc) != code:
            raise
        raise ProviderError(message, code=code) from exc
