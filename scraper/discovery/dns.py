"""DNS-based discovery: Prometheus ``dns_sd_configs``, targets from SRV, A or AAAA records."""

from __future__ import annotations

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ..labels import ADDRESS
from .base import Discoverer, DiscoveryError, Targets
from .models import DNSSDConfig

META_NAME = "__meta_dns_name"
META_SRV_TARGET = "__meta_dns_srv_record_target"
META_SRV_PORT = "__meta_dns_srv_record_port"

#: Seconds one lookup may take in all, retries across nameservers included.
_LIFETIME_S = 5.0


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    host, port = spec, 53
    if spec.startswith("["):  # [::1]:5353
        host, _, rest = spec[1:].partition("]")
        port = int(rest.removeprefix(":") or 53)
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(host, port)


class DNSDiscovery(Discoverer):
    """Targets from the records of each name, labelled as Prometheus labels them.

    ``nameservers`` (``"host"`` or ``"host:port"``) replaces the system resolver configuration;
    it is not a config key, it is how tests point discovery at a DNS server of their own.
    A name that does not exist yields no targets; a name whose lookup fails keeps its last good ones.
    """

    def __init__(self, config: DNSSDConfig, nameservers: list[str] | None = None) -> None:
        super().__init__(config.refresh_interval.total_seconds())
        self.config = config
        self._nameservers = [_nameserver(spec) for spec in nameservers or []]
        self._resolver: dns.resolver.Resolver | None = None

    def _get_resolver(self) -> dns.resolver.Resolver:
        if self._resolver is None:
            try:
                resolver = dns.resolver.Resolver(configure=not self._nameservers)
            except dns.exception.DNSException as exc:
                raise DiscoveryError(f"dns_sd: cannot read the system's resolver configuration: {exc}") from None
            if self._nameservers:
                resolver.nameservers = self._nameservers
            resolver.lifetime = _LIFETIME_S
            self._resolver = resolver
        return self._resolver

    def _lookup(self) -> dict[str, Targets | DiscoveryError]:
        resolver = self._get_resolver()
        results: dict[str, Targets | DiscoveryError] = {}
        for name in self.config.names:
            try:
                results[name] = self._lookup_name(resolver, name)
            except DiscoveryError as exc:
                results[name] = exc
        return results

    def _lookup_name(self, resolver: dns.resolver.Resolver, name: str) -> Targets:
        record_type = self.config.type
        try:
            answer = resolver.resolve(name, record_type, search=True, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.Timeout:
            raise DiscoveryError(f"dns_sd {record_type} {name}: no answer within {_LIFETIME_S:g}s") from None
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"dns_sd {record_type} {name}: lookup failed: {exc}") from None
        targets: Targets = []
        for rdata in answer.rrset or []:
            if rdata.rdtype == dns.rdatatype.SRV:
                host = rdata.target.to_text()
                targets.append({
                    ADDRESS: _host_port(host.rstrip("."), rdata.port),
                    META_NAME: name,
                    META_SRV_TARGET: host,  # Prometheus keeps the final dot here, not in the address
                    META_SRV_PORT: str(rdata.port),
                })
            else:
                targets.append({ADDRESS: _host_port(rdata.address, self.config.port or 0), META_NAME: name})
        return targets
