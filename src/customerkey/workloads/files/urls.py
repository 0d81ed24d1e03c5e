"""Names and URLs of the files workload: the tenant's admin site URL and its parser, site URLs
(root, ``/sites/``, ``/teams/`` and OneDrive ``/personal/`` sites) and file paths inside a
site, each checked and put in canonical form."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from customerkey.errors import BadParameter
from customerkey.workloads.files.models import MAX_PATH, SPO_DOMAIN

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_BAD_PATH_CHARS = set('"*:<>?\\|')


def admin_url(tenant: str, domain: str = SPO_DOMAIN) -> str:
    return f"https://{tenant}-admin.{domain}"


def tenant_of_admin_url(text: str, domain: str = SPO_DOMAIN) -> str:
    """The tenant an admin site URL (``https://<tenant>-admin.<domain>``) names."""
    parts = urlsplit(text.strip())
    host = (parts.hostname or "").lower()
    suffix = f"-admin.{domain}"
    tenant = host[: -len(suffix)] if host.endswith(suffix) else ""
    if (
        parts.scheme.lower() != "https"
        or parts.path.strip("/")
        or parts.query
        or parts.fragment
        or not _TENANT.match(tenant)
    ):
        raise BadParameter(
            f"'{text}' is not a SharePoint admin site URL like https://<tenant>-admin.{domain}."
        )
    return tenant


def parse_site_url(text: str, domain: str = SPO_DOMAIN) -> tuple[str, str, str]:
    """(canonical URL, tenant, kind) of a site URL: ``https://<tenant>.<domain>`` (the root
    site), ``https://<tenant>.<domain>/sites/<name>`` or ``/teams/<name>``, or a OneDrive
    ``https://<tenant>-my.<domain>/personal/<name>``."""
    example = (
        f"site URLs look like https://<tenant>.{domain}/sites/<name> or "
        f"https://<tenant>-my.{domain}/personal/<name>"
    )
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise BadParameter(f"'{text}' is not a site URL: {example}.") from None
    host = (parts.hostname or "").lower()
    suffix = "." + domain
    if (
        parts.scheme.lower() != "https"
        or not host.endswith(suffix)
        or port is not None
        or parts.username
        or parts.query
        or parts.fragment
    ):
        raise BadParameter(f"'{text}' is not a site URL of this service: {example}.")
    label = host[: -len(suffix)]
    raw = parts.path.rstrip("/")
    segments = raw.lower().split("/")[1:] if raw else []
    if label.endswith("-admin"):
        raise BadParameter(f"'{text}' is the tenant's admin site; files live in its sites.")
    if label.endswith("-my"):
        tenant, kind = label[:-3], "onedrive"
        shape_ok = len(segments) == 2 and segments[0] == "personal"
    else:
        tenant, kind = label, "site"
        shape_ok = not segments or (len(segments) == 2 and segments[0] in ("sites", "teams"))
    if not _TENANT.match(tenant) or not shape_ok or not all(segments):
        raise BadParameter(f"'{text}' is not a site URL: {example}.")
    if segments and not _SITE_NAME.match(segments[1]):
        raise BadParameter(
            f"The site name '{segments[1]}' is invalid: letters, digits, '-', '_' and '.', "
            "at most 128 characters."
        )
    url = f"https://{host}" + ("/" + "/".join(segments) if segments else "")
    return url, tenant, kind


def normalize_path(path: str) -> str:
    """A file path inside a site: folders separated by '/', e.g. 'Shared Documents/q1.xlsx'."""
    text = path.strip().strip("/")
    if not text:
        raise BadParameter("A file path is needed, e.g. 'Shared Documents/report.docx'.")
    if len(text) > MAX_PATH:
        raise BadParameter(f"The file path is {len(text)} characters; at most {MAX_PATH}.")
    for segment in text.split("/"):
        if not segment or segment in (".", "..") or segment != segment.strip():
            raise BadParameter(
                f"The file path '{path}' is invalid: empty, '.' or '..' folder names and names "
                "starting or ending with spaces are not allowed."
            )
        bad = sorted({c for c in segment if c in _BAD_PATH_CHARS or ord(c) < 32})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise BadParameter(f"The file path '{path}' contains characters not allowed: {shown}.")
    return text
