"""`lading build --compose`: compose services → Kubernetes objects.

Per service: a Deployment (a StatefulSet when the service keeps a named volume), a Service for
its ports, a ConfigMap of its ordinary variables and a Secret of the ones named like
credentials, both mounted with envFrom; probes from its healthcheck; claims for its named
volumes. What has no Kubernetes form is never dropped silently: `translate` lists it, the build
prints and records the list, and `--strict` refuses it.

`translate` is pure: a loaded project (compose_load) in, objects and the list out.
"""

from __future__ import annotations

import base64
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plans.build import ComposeSource, Untranslated
from runner.build.compose_load import ComposeProject, load_project
from runner.build.compose_spec import SCHEMA_ORIGIN
from runner.build.render import Rendered
from runner.common.errors import InputError
from runner.common.objects import Obj, dump_stream

# Variables named like credentials go to the Secret; the rest to the ConfigMap.
CREDENTIAL_NAME = re.compile(
    r"(?:^|_)(?:KEY|API_KEY|PASSWORD|PASS|TOKEN|SECRET|CREDENTIALS)$", re.IGNORECASE
)
PORT_NAME_MAX = 15
DEFAULT_VOLUME_SIZE = "1Gi"
MAX_PORT_RANGE = 100
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"

# Service fields translated below; everything else a service sets is listed as untranslated.
_TRANSLATED = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "ports", "expose", "volumes",
    "tmpfs", "healthcheck", "deploy", "scale", "cpus", "mem_limit", "mem_reservation",
    "working_dir", "user", "stop_grace_period", "tty", "stdin_open", "hostname", "labels",
    "annotations", "read_only", "cap_add", "cap_drop", "restart", "pull_policy", "profiles",
})
_WHY = {
    "build": "images are not built by lading; the service's `image:` is deployed",
    "privileged": "privileged containers are not generated; grant what is needed explicitly",
    "network_mode": "pods have their own network namespace",
    "networks": "all pods share one network; isolation needs NetworkPolicies",
    "depends_on": "Kubernetes starts pods without ordering; make the service retry or wait",
    "links": "Services are reachable by name without links",
    "container_name": "Kubernetes names pods itself; the Service carries the service's name",
    "pid": "pods have their own process namespace",
    "ipc": "pods have their own IPC namespace",
    "devices": "host devices are not mapped",
    "secrets": "compose file secrets are not translated; use environment variables",
    "configs": "compose configs are not translated",
    "extra_hosts": "host aliases are not generated",
    "dns": "pod DNS comes from the cluster",
    "logging": "logging drivers have no pod equivalent",
}
_DEPLOY_TRANSLATED = frozenset({"replicas", "resources"})


def describe(item: Untranslated) -> str:
    where = f"services.{item.service}.{item.field}" if item.service else item.field
    return f"{where}: {item.reason}"


@dataclass
class Translation:
    objects: list[Obj] = field(default_factory=list)
    untranslated: list[Untranslated] = field(default_factory=list)


def render_compose(source: ComposeSource, base: Path) -> Rendered:
    """Load, validate and translate; with `strict`, anything untranslated is an error."""
    path = base / source.file
    display = source.file
    project = load_project(path, display, [(base / f, f) for f in source.env_files])
    selected = select_services(project, source.services, display)
    try:
        translation = translate(project, selected)
    except InputError as e:
        raise InputError(f"{display}: {e.message}", hint=e.hint) from None
    if source.strict and translation.untranslated:
        raise InputError(
            f"{display}: {len(translation.untranslated)} compose feature(s) have no "
            "Kubernetes translation:\n  " + "\n  ".join(describe(u) for u in
                                                     translation.untranslated),
            hint="remove them from the compose file, or build without --strict to leave "
            "them out (they are listed in the result)",
        )
    inputs: dict[str, Any] = {
        "type": "compose",
        # Names, not paths: a path would make the digest depend on where the checkout is.
        "file": project.file,
        "project": project.name,
        "services": selected,
        "env_files": [Path(f).name for f in project.env_files],
        "strict": source.strict,
        "variables": {"from_environment": project.from_environment, "unset": project.unset},
        "untranslated": len(translation.untranslated),
        "tools": {"compose-spec": SCHEMA_ORIGIN},
    }
    return Rendered(dump_stream(translation.objects), inputs, path.parent,
                    tuple(translation.untranslated))


def is_credential(name: str) -> bool:
    return CREDENTIAL_NAME.search(name) is not None


def k8s_name(name: str, what: str, max_length: int = 52) -> str:
    """A compose name ([a-zA-Z0-9._-]) as a DNS-1123 label."""
    converted = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not converted or len(converted) > max_length:
        raise InputError(
            f"{what} {name!r} cannot be a Kubernetes name (lowercase letters, digits and '-', "
            f"at most {max_length} characters)"
        )
    return converted


def select_services(project: ComposeProject, names: list[str], where: str) -> list[str]:
    services: dict[str, Any] = project.document.get("services") or {}
    unknown = [n for n in names if n not in services]
    if unknown:
        raise InputError(
            f"{where}: no service named {', '.join(repr(n) for n in unknown)}",
            hint=f"services: {', '.join(sorted(services)) or 'none'}",
        )
    return sorted(names) if names else sorted(services)


def translate(project: ComposeProject, selected: list[str]) -> Translation:
    document = project.document
    services: dict[str, Any] = document.get("services") or {}
    out = Translation()
    for key in ("secrets", "configs", "include", "models", "jobs"):
        if document.get(key):
            reason = _WHY.get(key, f"top-level `{key}` is not translated")
            out.untranslated.append(Untranslated(field=key, reason=reason))
    for name, network in sorted((document.get("networks") or {}).items()):
        if name != "default" or network:
            out.untranslated.append(Untranslated(field=f"networks.{name}", reason=_WHY["networks"]))
    volumes: dict[str, Any] = {k: v or {} for k, v in (document.get("volumes") or {}).items()}
    explicit = bool(selected) and selected != sorted(services)
    users = _volume_users(services, selected)
    seen_names: dict[str, str] = {}
    for service in selected:
        spec = services[service] or {}
        if spec.get("profiles") and not explicit:
            out.untranslated.append(Untranslated(
                service=service, field="profiles",
                reason="a profile-only service; name it with --service to build it"))
            continue
        name = k8s_name(service, "service name")
        if name in seen_names:
            raise InputError(f"services {seen_names[name]!r} and {service!r} both become {name!r}")
        seen_names[name] = service
        if not spec.get("image"):
            out.untranslated.append(Untranslated(
                service=service, field="build",
                reason="no `image:` to deploy (lading does not build images)"))
            continue
        _ServiceTranslator(project, service, name, spec, volumes, users, out).run()
    return out


def _volume_users(services: dict[str, Any], selected: list[str]) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for service in selected:
        for entry in (services[service] or {}).get("volumes") or []:
            mount = _mount(entry)
            if mount.kind == "volume" and mount.source:
                users.setdefault(mount.source, []).append(service)
    return users


@dataclass(frozen=True)
class _Mount:
    kind: str  # volume | bind | tmpfs | other
    source: str | None
    target: str
    read_only: bool = False
    size: str | None = None


def _mount(entry: Any) -> _Mount:
    if isinstance(entry, dict):
        kind = str(entry.get("type", "volume"))
        size = (entry.get("tmpfs") or {}).get("size")
        return _Mount(kind, entry.get("source"), str(entry.get("target", "")),
                      bool(entry.get("read_only", False)),
                      None if size is None else str(size))
    text = str(entry)
    parts = text.split(":")
    if len(parts) == 1:
        return _Mount("volume", None, parts[0])
    source, target = parts[0], parts[1]
    read_only = len(parts) > 2 and "ro" in parts[2].split(",")
    bind = source.startswith(("/", ".", "~")) or "/" in source
    return _Mount("bind" if bind else "volume", source, target, read_only)


class _ServiceTranslator:
    def __init__(
        self,
        project: ComposeProject,
        service: str,
        name: str,
        spec: dict[str, Any],
        volumes: dict[str, Any],
        users: dict[str, list[str]],
        out: Translation,
    ) -> None:
        self.project, self.service, self.name, self.spec = project, service, name, spec
        self.volumes, self.users, self.out = volumes, users, out
        self.labels = {NAME_LABEL: name, PART_OF_LABEL: k8s_name(project.name, "project name", 63)}

    def note(self, field_name: str, reason: str) -> None:
        self.out.untranslated.append(
            Untranslated(service=self.service, field=field_name, reason=reason))

    def meta(self, name: str) -> Obj:
        return {"name": name, "labels": {**self.labels,
                                         "app.kubernetes.io/managed-by": "lading"}}

    def run(self) -> None:
        for key in sorted(self.spec):
            if key.startswith("x-") or key in _TRANSLATED:
                continue
            self.note(key, _WHY.get(key, f"`{key}` has no translation to Kubernetes"))
        restart = self.spec.get("restart")
        if restart in ("no", "on-failure") or str(restart).startswith("on-failure:"):
            self.note("restart", f"restart: {restart} — pods of a Deployment always restart")
        container, env_objects = self.container()
        pod: Obj = {"containers": [container]}
        claims = self.volumes_into(container, pod)
        self.pod_settings(pod)
        ports = container.get("ports", [])
        template: Obj = {"metadata": {"labels": dict(self.labels)}, "spec": pod}
        annotations = {**_mapping(self.spec.get("labels")),
                       **_mapping(self.spec.get("annotations"))}
        if annotations:
            template["metadata"]["annotations"] = annotations
        workload_spec: Obj = {
            "replicas": self.replicas(),
            "selector": {"matchLabels": dict(self.labels)},
            "template": template,
        }
        if claims is None:
            workload: Obj = {"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": self.meta(self.name), "spec": workload_spec}
        else:
            workload_spec["serviceName"] = self.name
            if claims:
                workload_spec["volumeClaimTemplates"] = claims
            workload = {"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "metadata": self.meta(self.name), "spec": workload_spec}
        self.out.objects += [*env_objects, workload]
        if ports:
            self.out.objects.append({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": self.meta(self.name),
                "spec": {
                    "selector": dict(self.labels),
                    "ports": [{"name": p["name"], "port": p["containerPort"],
                               "targetPort": p["name"], "protocol": p["protocol"]}
                              for p in ports],
                },
            })

    # -- the container ---------------------------------------------------------------------

    def container(self) -> tuple[Obj, list[Obj]]:
        spec = self.spec
        container: Obj = {"name": self.name, "image": str(spec["image"])}
        entrypoint = _words(spec.get("entrypoint"))
        command = _words(spec.get("command"))
        if entrypoint:
            container["command"] = entrypoint
        if command:
            container["args"] = command
        if spec.get("working_dir"):
            container["workingDir"] = str(spec["working_dir"])
        if spec.get("tty"):
            container["tty"] = True
        if spec.get("stdin_open"):
            container["stdin"] = True
        policy = {"always": "Always", "never": "Never", "missing": "IfNotPresent",
                  "if_not_present": "IfNotPresent"}.get(str(spec.get("pull_policy")))
        if policy:
            container["imagePullPolicy"] = policy
        elif spec.get("pull_policy"):
            self.note("pull_policy", f"pull_policy: {spec['pull_policy']} has no equivalent")
        ports = self.ports()
        if ports:
            container["ports"] = ports
        env_objects, env_from = self.environment()
        if env_from:
            container["envFrom"] = env_from
        resources = self.resources()
        if resources:
            container["resources"] = resources
        container.update(self.probes())
        security = self.security()
        if security:
            container["securityContext"] = security
        return container, env_objects

    def environment(self) -> tuple[list[Obj], list[Obj]]:
        values = self.project.environments.get(self.service, {})
        plain = {k: v for k, v in sorted(values.items()) if not is_credential(k)}
        secret = {k: v for k, v in sorted(values.items()) if is_credential(k)}
        objects: list[Obj] = []
        env_from: list[Obj] = []
        if plain:
            objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": self.meta(f"{self.name}-config"), "data": plain})
            env_from.append({"configMapRef": {"name": f"{self.name}-config"}})
        if secret:
            objects.append({
                "apiVersion": "v1", "kind": "Secret", "metadata": self.meta(f"{self.name}-secret"),
                "type": "Opaque",
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
            })
            env_from.append({"secretRef": {"name": f"{self.name}-secret"}})
        return objects, env_from

    def ports(self) -> list[Obj]:
        """Container ports, one per (target, protocol); named uniquely and validly."""
        found: list[tuple[int, str, str | None]] = []
        for i, entry in enumerate(self.spec.get("ports") or []):
            found += self.port_entry(entry, f"ports[{i}]")
        for i, entry in enumerate(self.spec.get("expose") or []):
            text, _, proto = str(entry).partition("/")
            for target in _port_range(text, self.service, f"expose[{i}]"):
                found.append((target, (proto or "tcp").upper(), None))
        ports: list[Obj] = []
        taken: set[str] = set()
        seen: set[tuple[int, str]] = set()
        for target, protocol, wanted in found:
            if (target, protocol) in seen:
                continue
            seen.add((target, protocol))
            name = port_name(wanted, target, protocol, taken)
            taken.add(name)
            ports.append({"name": name, "containerPort": target, "protocol": protocol})
        return ports

    def port_entry(self, entry: Any, field_name: str) -> list[tuple[int, str, str | None]]:
        if isinstance(entry, dict):
            protocol = str(entry.get("protocol", "tcp")).upper()
            if entry.get("host_ip"):
                self.note(f"{field_name}.host_ip", "binding to a host address is not translated")
            if entry.get("mode") == "host":
                self.note(f"{field_name}.mode", "host-mode ports are not translated")
            targets = _port_range(str(entry["target"]), self.service, f"{field_name}.target")
            name = entry.get("name")
            return [(t, protocol, None if name is None else str(name)) for t in targets]
        text, _, proto = str(entry).partition("/")
        parts = text.rsplit(":", 2)
        if len(parts) == 3 and parts[0]:
            self.note(field_name, f"binding to host address {parts[0]} is not translated")
        targets = _port_range(parts[-1], self.service, field_name)
        return [(t, (proto or "tcp").upper(), None) for t in targets]

    def resources(self) -> Obj:
        deploy = self.spec.get("deploy") or {}
        for key in sorted(deploy):
            if key not in _DEPLOY_TRANSLATED:
                self.note(f"deploy.{key}", f"deploy.{key} is not translated")
        declared = deploy.get("resources") or {}
        limits = dict(declared.get("limits") or {})
        reservations = dict(declared.get("reservations") or {})
        limits.setdefault("cpus", self.spec.get("cpus"))
        limits.setdefault("memory", self.spec.get("mem_limit"))
        reservations.setdefault("memory", self.spec.get("mem_reservation"))
        out: Obj = {}
        for section, values, where in (("limits", limits, "limits"),
                                       ("requests", reservations, "reservations")):
            converted: dict[str, str] = {}
            for key, value in sorted(values.items()):
                if value is None:
                    continue
                if key == "cpus":
                    converted["cpu"] = cpu_quantity(value, self.service)
                elif key == "memory":
                    converted["memory"] = memory_quantity(value, self.service)
                else:
                    self.note(f"deploy.resources.{where}.{key}", f"{key} is not translated")
            if converted:
                out[section] = converted
        return out

    def probes(self) -> Obj:
        check = self.spec.get("healthcheck")
        if not check or check.get("disable"):
            return {}
        test = check.get("test")
        if test is None:
            # Healthcheck timings without a test tune the image's own HEALTHCHECK, which
            # Kubernetes never runs.
            self.note("healthcheck", "no `test`: the image's own HEALTHCHECK is not run")
            return {}
        if isinstance(test, str):
            command = ["/bin/sh", "-c", test]
        elif test and test[0] == "NONE":
            return {}
        elif test and test[0] == "CMD-SHELL":
            command = ["/bin/sh", "-c", " ".join(str(t) for t in test[1:])]
        elif test and test[0] == "CMD":
            command = [str(t) for t in test[1:]]
        else:
            command = [str(t) for t in test]
        interval = duration_seconds(check.get("interval", "30s"), self.service)
        probe: Obj = {
            "exec": {"command": command},
            "periodSeconds": interval,
            "timeoutSeconds": duration_seconds(check.get("timeout", "30s"), self.service),
            "failureThreshold": int(check.get("retries", 3)),
        }
        probes: Obj = {"readinessProbe": probe, "livenessProbe": dict(probe)}
        if check.get("start_period"):
            start = duration_seconds(check["start_period"], self.service)
            every = duration_seconds(check.get("start_interval", "5s"), self.service)
            # Failures inside compose's start period do not count; a startup probe holds the
            # other two back for as long.
            probes["startupProbe"] = {**probe, "periodSeconds": every,
                                      "failureThreshold": max(1, math.ceil(start / every))}
        return probes

    def security(self) -> Obj:
        context: Obj = {}
        if self.spec.get("read_only"):
            context["readOnlyRootFilesystem"] = True
        capabilities: Obj = {}
        if self.spec.get("cap_add"):
            capabilities["add"] = [str(c) for c in self.spec["cap_add"]]
        if self.spec.get("cap_drop"):
            capabilities["drop"] = [str(c) for c in self.spec["cap_drop"]]
        if capabilities:
            context["capabilities"] = capabilities
        user = self.spec.get("user")
        if user is not None:
            uid, _, gid = str(user).partition(":")
            if uid.isdigit() and (not gid or gid.isdigit()):
                context["runAsUser"] = int(uid)
                if gid:
                    context["runAsGroup"] = int(gid)
            else:
                self.note("user", f"user {user!r} is not numeric; pods run as a numeric uid")
        return context

    def replicas(self) -> int:
        deploy = self.spec.get("deploy") or {}
        value = deploy.get("replicas", self.spec.get("scale", 1))
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InputError(f"services.{self.service}: replicas {value!r} is not a number"
                             ) from None

    def pod_settings(self, pod: Obj) -> None:
        if self.spec.get("stop_grace_period"):
            pod["terminationGracePeriodSeconds"] = duration_seconds(
                self.spec["stop_grace_period"], self.service)
        hostname = self.spec.get("hostname")
        if hostname:
            pod["hostname"] = k8s_name(str(hostname), "hostname", 63)

    # -- volumes ---------------------------------------------------------------------------

    def volumes_into(self, container: Obj, pod: Obj) -> list[Obj] | None:
        """Mounts into the container and volumes into the pod. Returns the claim templates
        when the service keeps a named volume (a StatefulSet), else None (a Deployment)."""
        mounts: list[Obj] = []
        pod_volumes: list[Obj] = []
        templates: list[Obj] = []
        stateful = False
        entries = list(self.spec.get("volumes") or [])
        tmpfs = self.spec.get("tmpfs") or []
        entries += [{"type": "tmpfs", "target": t} for t in
                    ([tmpfs] if isinstance(tmpfs, str) else tmpfs)]
        for i, entry in enumerate(entries):
            mount = _mount(entry)
            volume_name = f"vol-{i}"
            if mount.kind == "bind":
                self.note(f"volumes[{i}]", f"host bind mount {mount.source} is not translated")
                continue
            if mount.kind == "tmpfs":
                empty: Obj = {"medium": "Memory"}
                if mount.size:
                    empty["sizeLimit"] = memory_quantity(mount.size, self.service)
                pod_volumes.append({"name": volume_name, "emptyDir": empty})
            elif mount.kind != "volume":
                self.note(f"volumes[{i}]", f"a {mount.kind} mount is not translated")
                continue
            elif mount.source is None:
                pod_volumes.append({"name": volume_name, "emptyDir": {}})
            else:
                stateful = True
                volume_name = self.named_volume(mount.source, f"volumes[{i}]", templates,
                                                pod_volumes)
            mounts.append({"name": volume_name, "mountPath": mount.target,
                           **({"readOnly": True} if mount.read_only else {})})
        if mounts:
            container["volumeMounts"] = mounts
        if pod_volumes:
            pod["volumes"] = pod_volumes
        return templates if stateful else None

    def named_volume(self, source: str, field_name: str, templates: list[Obj],
                     pod_volumes: list[Obj]) -> str:
        if source not in self.volumes:
            raise InputError(f"services.{self.service}.{field_name}: the volume {source!r} is "
                             "not declared under the top-level `volumes:`")
        declared = self.volumes[source]
        claim = k8s_name(str(declared.get("name") or source), "volume name")
        size, storage_class = _volume_settings(declared, source)
        if declared.get("external"):
            # An existing claim of that name, made outside this build.
            pod_volumes.append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
            return claim
        spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
        if storage_class:
            spec["storageClassName"] = storage_class
        if len(self.users.get(source, [])) > 1:
            # Shared by several services: one claim they all mount, so it must allow many.
            spec["accessModes"] = ["ReadWriteMany"]
            if not any(o.get("kind") == "PersistentVolumeClaim" and
                       o["metadata"]["name"] == claim for o in self.out.objects):
                self.out.objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                         "metadata": {"name": claim, "labels": {
                                             PART_OF_LABEL: self.labels[PART_OF_LABEL]}},
                                         "spec": spec})
            pod_volumes.append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
            return claim
        templates.append({"metadata": {"name": claim}, "spec": spec})
        return claim


def _volume_settings(declared: dict[str, Any], source: str) -> tuple[str, str | None]:
    extension = declared.get("x-lading") or {}
    if not isinstance(extension, dict) or set(extension) - {"size", "storage_class"}:
        raise InputError(f"volumes.{source}.x-lading: only `size` and `storage_class` are known")
    return str(extension.get("size", DEFAULT_VOLUME_SIZE)), extension.get("storage_class")


def port_name(wanted: str | None, target: int, protocol: str, taken: set[str]) -> str:
    """A container port name Kubernetes accepts (IANA service name: at most 15 characters of
    [a-z0-9-], a letter somewhere, no '--', no '-' at either end), unique in `taken`."""
    base = ""
    if wanted:
        base = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", wanted.lower())).strip("-")
        base = base[:PORT_NAME_MAX].strip("-")
    if not base or not re.search("[a-z]", base):
        base = f"{protocol.lower()}-{target}"
    name, n = base, 2
    while name in taken:
        suffix = f"-{n}"
        name = base[: PORT_NAME_MAX - len(suffix)].rstrip("-") + suffix
        n += 1
    return name


def _port_range(text: str, service: str, field_name: str) -> list[int]:
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high) if sep else int(low)
    except ValueError:
        raise InputError(f"services.{service}.{field_name}: {text!r} is not a port") from None
    if not 1 <= first <= last <= 65535 or last - first >= MAX_PORT_RANGE:
        raise InputError(f"services.{service}.{field_name}: {text!r} is not a port or a range "
                         f"of at most {MAX_PORT_RANGE} ports")
    return list(range(first, last + 1))


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _mapping(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return {k: v for k, _, v in (str(item).partition("=") for item in value)}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def duration_seconds(value: Any, service: str) -> int:
    """A compose duration (`1m30s`, `500ms`, or seconds as a number) in whole seconds, at least
    one (probe periods and timeouts cannot be zero)."""
    if isinstance(value, int | float):
        return max(1, math.ceil(value))
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise InputError(f"services.{service}: {text!r} is not a duration like 30s or 1m30s")
    return max(1, math.ceil(sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)))


_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def memory_quantity(value: Any, service: str) -> str:
    """Compose's byte values (`512m`, `1g`, `2048`, binary units as Docker reads them) as a
    Kubernetes quantity."""
    match = _BYTES.match(str(value).strip())
    if match is None:
        raise InputError(f"services.{service}: {value!r} is not a byte value like 512m")
    amount = int(float(match[1]) * _SCALE[match[2].lower()])
    for suffix, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if amount and amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)


def cpu_quantity(value: Any, service: str) -> str:
    try:
        cores = float(value)
    except (TypeError, ValueError):
        raise InputError(f"services.{service}: cpus {value!r} is not a number") from None
    millis = round(cores * 1000)
    if millis <= 0:
        raise InputError(f"services.{service}: cpus {value!r} must be above zero")
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"
