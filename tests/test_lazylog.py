"""kvminfo.lazylog: no logging import until a record must be shown; then logging's own behaviour."""

from __future__ import annotations

import logging
import subprocess
import sys

from kvminfo.lazylog import get_logger


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_nothing_below_warning_imports_logging_and_a_warning_reads_as_every_command_writes_it():
    done = _python(
        "import sys\n"
        "from kvminfo.lazylog import DEBUG, WARNING, get_logger\n"
        "log = get_logger('kvminfo.sources.kvm')\n"
        "log.debug('probing %s', '/dev/kvm'); log.info('quiet')\n"
        "print('before', 'logging' in sys.modules, log.isEnabledFor(DEBUG), log.isEnabledFor(WARNING))\n"
        "log.warning('kvm unavailable: %s', 'gone')\n"
        "print('after', 'logging' in sys.modules)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "before False False True\nafter True\n"
    assert done.stderr == "kvminfo WARNING: kvm unavailable: gone\n"  # kvminfo.logsetup's format


def test_logging_imported_but_never_configured_still_gets_the_commands_format():
    """A library or a .pth file may import logging without setting it up: the warning keeps its prefix."""
    done = _python("import logging\nfrom kvminfo.lazylog import get_logger\n"
                   "get_logger('kvminfo.sources.kvm').warning('kvm error: %s', 'not a KVM device')\n")
    assert done.returncode == 0 and done.stderr == "kvminfo WARNING: kvm error: not a KVM device\n"


def test_once_logging_is_configured_every_level_goes_to_it_naming_the_caller(caplog):
    log = get_logger("kvminfo.test.lazylog")
    with caplog.at_level(logging.DEBUG, logger="kvminfo.test.lazylog"):
        log.debug("a %s", "debug")
        log.info("an info")
        log.error("an error")
        assert log.isEnabledFor(logging.DEBUG)
    assert not log.isEnabledFor(logging.DEBUG)  # logging's own level again once the block is left
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("kvminfo.test.lazylog", "DEBUG", "a debug"), ("kvminfo.test.lazylog", "INFO", "an info"),
        ("kvminfo.test.lazylog", "ERROR", "an error")]
    assert {r.funcName for r in caplog.records} == {"test_once_logging_is_configured_every_level_goes_to_it_naming_the_caller"}


def test_exc_info_reaches_logging(caplog):
    log = get_logger("kvminfo.test.lazylog")
    try:
        raise ValueError("boom")
    except ValueError:
        with caplog.at_level(logging.ERROR, logger="kvminfo.test.lazylog"):
            log.error("failed", exc_info=True)
    (rec,) = caplog.records
    assert rec.exc_info is not None and rec.exc_info[0] is ValueError


def test_a_program_with_its_own_handler_on_kvminfo_keeps_its_logging():
    """An embedding program that handles the kvminfo logger itself (root left bare): each warning
    once, through its handler, and nothing of kvminfo's configuration is added to root."""
    done = _python(
        "import logging, sys\n"
        "handler = logging.StreamHandler(sys.stderr); handler.setFormatter(logging.Formatter('APP %(name)s: %(message)s'))\n"
        "logging.getLogger('kvminfo').addHandler(handler)\n"
        "from kvminfo.lazylog import get_logger\n"
        "get_logger('kvminfo.collect').warning('kvm unavailable: %s', 'gone')\n"
        "logging.getLogger('myapp').warning('the app speaks')\n"
        "print(len(logging.getLogger().handlers))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n"  # root was left as the program set it
    assert done.stderr == "APP kvminfo.collect: kvm unavailable: gone\nthe app speaks\n"  # logging's last resort for myapp
