"""The checks a config must pass before the router serves it: one function for ``serve`` and for
``check-config`` (and the CLI's ``config check``), so a config that one accepts the other accepts.

:func:`prepare` goes beyond the schema (:mod:`pcache.router.config`): the policy and its parameters
are built, the fingerprint settings applied, Tier-1 files read, replica URLs compared, the admin
token judged. It reports every problem at once, each as ``file:line: field: what is wrong`` when the
config came from a file. It opens nothing (no state store, no socket, no token file), so checking
a config never changes anything.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

from pcache.policy import POLICY_NAMES, UnknownPolicyError, make_policy
from pcache.policy.base import Policy
from pcache.prompt import FingerprintConfig
from pcache.router.config import ConfigError, RouterConfig, is_loopback, load_config, split_host_port
from pcache.router.security import configured_admin_token

__all__ = ["Prepared", "check_config_file", "prepare"]

_UNEXPECTED = re.compile(r"unexpected keyword argument '([^']+)'")


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the checks built, for the daemon to use rather than build again."""

    fingerprint: FingerprintConfig
    policy: Policy
    tier1_texts: dict[str, str]


def _problem(config: RouterConfig, loc: tuple[int | str, ...], field: str, message: str) -> str:
    where = config.where(*loc)
    return f"{where}: {field}: {message}" if where else f"{field}: {message}"


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _policy(config: RouterConfig, problems: list[str]) -> Policy | None:
    name, params = config.policy.name, config.policy.params
    try:
        return make_policy(name, **params)
    except UnknownPolicyError:
        hint = _did_you_mean(name, POLICY_NAMES)
        problems.append(
            _problem(
                config,
                ("policy", "name"),
                "policy.name",
                f"unknown policy {name!r}{hint} (valid: {', '.join(POLICY_NAMES)})",
            )
        )
        return None
    except TypeError as exc:
        unexpected = _UNEXPECTED.search(str(exc))
        if unexpected is None:
            problems.append(_problem(config, ("policy", "params"), "policy.params", str(exc)))
            return None
        key = unexpected.group(1)
        accepted = [p for p in inspect.signature(type(make_policy(name))).parameters if p != "self"]
        hint = _did_you_mean(key, accepted)
        problems.append(
            _problem(
                config,
                ("policy", "params", key),
                f"policy.params.{key}",
                f"{name} has no parameter {key!r}{hint} (parameters: {', '.join(accepted) or 'none'})",
            )
        )
        return None
    except (ValueError, KeyError) as exc:
        problems.append(_problem(config, ("policy", "params"), "policy.params", str(exc)))
        return None


def _fingerprint(config: RouterConfig, problems: list[str]) -> FingerprintConfig | None:
    try:
        return FingerprintConfig(**config.fingerprint)
    except (TypeError, ValueError) as exc:
        problems.append(_problem(config, ("fingerprint",), "fingerprint", str(exc)))
        return None


def _tier1_texts(config: RouterConfig, problems: list[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for index, prefix in enumerate(config.tier1):
        try:
            texts[prefix.name] = config.tier1_text(prefix)
        except ConfigError as exc:
            problems.append(_problem(config, ("tier1", index, "file"), f"tier1[{index}].file", str(exc)))
    return texts


def _replica_urls(config: RouterConfig, problems: list[str]) -> None:
    first: dict[str, int] = {}
    for index, replica in enumerate(config.replicas):
        url = replica.url.lower()
        if url in first:
            other = config.replicas[first[url]].name
            problems.append(
                _problem(
                    config,
                    ("replicas", index, "url"),
                    f"replicas[{index}].url",
                    f"{replica.url} is already replica {other!r}: one server counted twice skews routing",
                )
            )
        else:
            first[url] = index


def _admin(config: RouterConfig, problems: list[str]) -> None:
    try:
        token = configured_admin_token(config)
    except ConfigError as exc:
        problems.append(
            _problem(config, ("admin", "token_env"), "admin.token_env", str(exc).partition(": ")[2])
        )
        return
    host, _ = split_host_port(config.admin.listen)
    if token is None and not is_loopback(host):
        problems.append(
            _problem(
                config,
                ("admin", "listen"),
                "admin.listen",
                f"{config.admin.listen} is not a loopback address: set a token in the environment "
                f"variable named by admin.token_env ({config.admin.token_env or 'unset'})",
            )
        )


def prepare(config: RouterConfig) -> Prepared:
    """Run every check; raise :class:`ConfigError` listing all problems, one per line."""
    problems: list[str] = []
    fingerprint = _fingerprint(config, problems)
    policy = _policy(config, problems)
    texts = _tier1_texts(config, problems)
    _replica_urls(config, problems)
    _admin(config, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    assert fingerprint is not None and policy is not None
    return Prepared(fingerprint=fingerprint, policy=policy, tier1_texts=texts)


def check_config_file(path: str | Path) -> RouterConfig:
    """Load a config file and run :func:`prepare` on it: what ``serve`` does before binding."""
    config = load_config(path)
    prepare(config)
    return config
