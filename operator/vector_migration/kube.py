"""A small async Kubernetes REST client for the few calls the operator makes itself.

kopf handles watching, status patches and events; this covers the rest (Secrets, Jobs, Pods,
ConfigMaps, PersistentVolumeClaims) with the credentials kopf logged in with. Create is
idempotent (409 returns the existing object), reads return None for 404.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from . import __version__

# Answers that say "not now" rather than "no": a conflict, throttling, an overloaded or restarting
# API server, or no answer at all (status 0). The same call made again later can succeed.
TRANSIENT_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504})


class KubeError(RuntimeError):
    """An API call failed; the message carries the status and the server's reason, no bodies."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether retrying the same call later may succeed (else a person must change something)."""
        return self.status in TRANSIENT_STATUSES


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate (from kopf's ConnectionInfo)."""

    server: str
    token: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    certificate: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Credentials:
        """Build from a kopf.ConnectionInfo."""
        return cls(
            server=info.server,
            token=info.token,
            ca_data=info.ca_data,
            insecure=bool(info.insecure),
            certificate=info.certificate_data,
            private_key=info.private_key_data,
        )


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a collection or an object."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        prefix += f"/namespaces/{quote(namespace, safe='')}"
    prefix += f"/{plural}"
    if name:
        prefix += f"/{quote(name, safe='')}"
    return prefix


class KubeClient:
    """The operator's own API calls."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # audit logs and API priority-and-fairness see who is calling
            headers = {"Accept": "application/json", "User-Agent": f"vector-migration-operator/{__version__}"}
            if self.credentials.token:
                headers["Authorization"] = f"Bearer {self.credentials.token}"
            context: ssl.SSLContext | bool = False if self.credentials.insecure else ssl.create_default_context()
            if isinstance(context, ssl.SSLContext) and self.credentials.ca_data:
                context.load_verify_locations(cadata=self.credentials.ca_data.decode())
            self._session = aiohttp.ClientSession(
                base_url=self.credentials.server.rstrip("/") + "/",
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=60),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any] | None:
        http = await self._http()
        try:
            async with http.request(method, url.lstrip("/"), **kwargs) as response:
                return await self._answer(method, url, response)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, f"{method} {url}: no answer ({type(error).__name__})") from None

    @staticmethod
    async def _answer(method: str, url: str, response: aiohttp.ClientResponse) -> dict[str, Any] | None:
        if response.status == 404:
            return None
        try:
            body = await response.json(content_type=None) if response.content_length != 0 else {}
        except ValueError:
            body = {}  # an error page from a proxy in front of the API server, say
        if response.status >= 400:
            reason = body.get("reason") if isinstance(body, dict) else None
            message = body.get("message") if isinstance(body, dict) else None
            raise KubeError(response.status, f"{method} {url}: {response.status} {reason or ''} {message or ''}")
        return body if isinstance(body, dict) else {}

    async def get(self, url: str) -> dict[str, Any] | None:
        """Read an object; None when it does not exist."""
        return await self._request("GET", url)

    async def list(self, url: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """List a collection."""
        params = {"labelSelector": label_selector} if label_selector else None
        body = await self._request("GET", url, params=params)
        return list((body or {}).get("items", []))

    async def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object, or return the existing one of that name (a restart re-creates safely)."""
        try:
            created = await self._request("POST", url, json=body)
        except KubeError as error:
            if error.status != 409:
                raise
            created = None
        if created:
            return created
        existing = await self.get(f"{url}/{quote(body['metadata']['name'], safe='')}")
        if existing is None:
            raise KubeError(409, f"POST {url}: conflict, and the object cannot be read")
        return existing

    async def patch(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch an object."""
        return await self._request("PATCH", url, json=body, headers={"Content-Type": "application/merge-patch+json"})

    async def delete(self, url: str) -> None:
        """Delete an object (absent is fine), letting the garbage collector take its children."""
        await self._request("DELETE", url, json={"propagationPolicy": "Background"})

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data; None when it does not exist."""
        secret = await self.get(path("v1", "secrets", namespace, name))
        if secret is None:
            return None
        return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
