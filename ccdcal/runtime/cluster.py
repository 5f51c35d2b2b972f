"""Pixel work on a Dask distributed cluster (``--scheduler``).

``ccdcal process --scheduler tcp://HOST:8786`` sends each light's calibration, and each band of rows of a
master's combine (``ccdcal masters --scheduler`` too; :mod:`ccdcal.masters.combine`), to the workers of an
existing cluster; ``ingest --scheduler`` each chunk of header reading. ``--scheduler local:N`` starts a
:class:`distributed.LocalCluster` of N single-threaded worker processes for the run. The workers must see
the raw frames, the masters and the output folder at the same paths as the coordinator (a shared file
system). They only read files and write temporary files: the coordinator alone writes the catalog, the
master files and renames the outputs, exactly as with ``--jobs``.

A worker that dies mid-task is survived: the scheduler gives its tasks to another worker (Dask's
``allowed-failures``), and a task that raised on a lost connection is retried (``retries``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType

from ccdcal.errors import UsageError
from ccdcal.runtime.cores import check_workers, usable_cores

#: Times a task is resubmitted after an error of its worker (not of the frame: those are results).
RETRIES = 2

_LOCAL = re.compile(r"^local(?::(\d+))?$")


@dataclass(frozen=True)
class Cluster:
    """An executor on a Dask cluster and how many tasks it runs at once."""

    executor: Executor
    workers: int
    address: str


def check_address(address: str) -> None:
    """Raise :class:`UsageError` unless ``address`` is ``local[:N]`` or a scheduler URL."""
    local = _LOCAL.match(address)
    if local:
        if local.group(1) is not None:
            check_workers(int(local.group(1)), f"N in --scheduler {address}")
        return
    if not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$", address):
        raise UsageError(
            f"--scheduler {address}: not a Dask scheduler address; give tcp://HOST:8786 "
            "(the address `dask scheduler` prints) or local:N to start N local workers"
        )


@contextmanager
def dask_cluster(address: str, *, timeout: float = 10.0) -> Iterator[Cluster]:
    """A Dask executor for the length of a run.

    Parameters
    ----------
    address : str
        ``local:N`` (start N worker processes here, one thread each; ``local`` is one per core), or the
        address of a running scheduler (``tcp://HOST:8786``).
    timeout : float
        Seconds to wait for the scheduler.

    Raises
    ------
    UsageError
        When Dask is not installed, the address is malformed, or no scheduler answers there.

    Notes
    -----
    Inside an open :class:`ClusterOnDemand` of the same address, its cluster is used (and left open).
    """
    check_address(address)
    shared = _SHARED.get(address)
    if shared is not None:
        reused = shared.get()
        assert reused is not None
        yield reused
        return
    with _started(address, timeout) as cluster:
        yield cluster


@contextmanager
def _started(address: str, timeout: float = 10.0) -> Iterator[Cluster]:
    """:func:`dask_cluster` of its own: a client of the scheduler at ``address``, or a new LocalCluster."""
    try:
        # Dask is an optional extra, and loads only for --scheduler (start-up stays fast).
        from distributed import Client, LocalCluster
    except ImportError:  # the optional extra
        raise UsageError("--scheduler needs Dask distributed: pip install 'ccdcal[dask]'") from None
    local = _LOCAL.match(address)
    cluster = None
    try:
        if local:
            workers = int(local.group(1) or usable_cores())
            check_workers(workers, f"N in --scheduler {address}")
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            client = Client(cluster, timeout=timeout)
        else:
            try:
                client = Client(address, timeout=timeout)
            except OSError as exc:
                raise UsageError(
                    f"--scheduler {address}: no Dask scheduler answers ({exc}); start one with "
                    "`dask scheduler` and workers with `dask worker ADDRESS`, or use local:N"
                ) from None
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    try:
        threads = sum(client.nthreads().values()) or 1
        executor = client.get_executor(retries=RETRIES, pure=False)
        yield Cluster(executor, threads, address)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


#: The outermost open ClusterOnDemand of each address: nested users share its cluster.
_SHARED: dict[str, ClusterOnDemand] = {}


class ClusterOnDemand:
    """A :func:`dask_cluster` started the first time :meth:`get` is called, ended by :meth:`close`.

    ``ccdcal masters --scheduler`` connects (or starts ``local:N`` workers) only when a master is to be
    combined: a run that finds every master current starts nothing. While one is open as a context
    manager, a :class:`ClusterOnDemand` or :func:`dask_cluster` of the same address opened inside it uses
    its cluster: ``ccdcal process`` starts ``local:N`` workers once for its masters and its lights.

    Parameters
    ----------
    address : str or None
        The ``--scheduler`` address; ``None``: :meth:`get` returns ``None`` (work here).
    """

    def __init__(self, address: str | None) -> None:
        if address is not None:
            check_address(address)
        self.address = address
        self._stack = ExitStack()
        self._cluster: Cluster | None = None
        self._outer: ClusterOnDemand | None = None

    def __enter__(self) -> ClusterOnDemand:
        if self.address is not None:
            self._outer = _SHARED.get(self.address)
            if self._outer is None:
                _SHARED[self.address] = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get(self) -> Cluster | None:
        """The cluster (started now if it is not yet), or ``None`` without an address.

        Raises
        ------
        UsageError
            As :func:`dask_cluster`.
        """
        if self.address is None:
            return None
        if self._outer is not None:
            return self._outer.get()
        if self._cluster is None:
            self._cluster = self._stack.enter_context(_started(self.address))
        return self._cluster

    def close(self) -> None:
        """End the cluster (close the client; stop ``local:N`` workers), unless an outer one owns it."""
        if self.address is not None and _SHARED.get(self.address) is self:
            del _SHARED[self.address]
        self._outer = None
        self._cluster = None
        self._stack.close()
