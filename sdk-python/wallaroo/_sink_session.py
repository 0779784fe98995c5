"""The sink side of the connector protocol (protocol/README.md, 6.3, 6.4).

Every Batch is handed to ``Sink.write`` as it arrives and answered with
``BatchReply{batch_id}`` once ``write`` returns, so replies leave in the
order the batches came. When ``write`` raises, the session sends
``Error{batch_id}`` and gives the connection up (the engine closes it and
sends the batch again on the next one).

A :class:`~wallaroo.connector.TwoPhaseSink` says ``2pc`` in its Hello,
sends ``InDoubt`` (from ``in_doubt()``) as its first frame after Welcome,
answers Prepare with Prepared, and Commit or Abort with Resolved, except a
Commit or Abort from an engine incarnation older than the newest it has
seen, which is ignored.
"""

from __future__ import annotations

from typing import Any, List

from ._connector_session import (
    Phase,
    Session,
    UserCodeError,
    call_user,
)
from ._log import log
from ._pb import wallaroo_pb2 as pb
from .connector import ConnectorConfig, Output, Sink, TwoPhaseSink

_MAX_ERROR_TEXT = 2000


class SinkSession(Session):
    """A sink connector's run."""

    role = pb.ROLE_SINK
    role_name = "sink"

    def __init__(
        self,
        sink: Sink,
        config: ConnectorConfig,
        *,
        connect_timeout: float,
        stop: Any,
    ) -> None:
        super().__init__(sink, config, connect_timeout=connect_timeout, stop=stop)
        self.sink = sink
        self.two_phase = isinstance(sink, TwoPhaseSink)
        self.newest_incarnation = 0
        self.name = type(sink).__name__

    def capabilities(self) -> List[str]:
        caps = super().capabilities()
        if self.two_phase:
            caps.append("2pc")
        return caps

    def on_welcome(self, welcome: pb.Welcome) -> None:
        self.newest_incarnation = max(self.newest_incarnation, welcome.incarnation)
        if self.two_phase:
            assert isinstance(self.sink, TwoPhaseSink)
            doubts = call_user(f"{self.name}.in_doubt()", self.sink.in_doubt)
            frame = pb.Frame()
            frame.in_doubt.SetInParent()
            try:
                for epoch, incarnation in doubts or ():
                    frame.in_doubt.epochs.append(epoch)
                    frame.in_doubt.incarnations.append(incarnation)
            except (TypeError, ValueError) as exc:
                raise UserCodeError(
                    f"{self.name}.in_doubt() must return a list of "
                    f"(epoch, incarnation) pairs of ints: {exc}"
                ) from None
            self.send(frame)
            if frame.in_doubt.epochs:
                log(
                    "in doubt: "
                    + ", ".join(
                        f"epoch {e} (incarnation {i})"
                        for e, i in zip(frame.in_doubt.epochs, frame.in_doubt.incarnations)
                    )
                )
        self.phase = Phase.OPEN

    def on_frame(self, body: str, msg: Any) -> bool:
        if self.phase is not Phase.OPEN:
            return False
        if body == "batch":
            self._on_batch(msg)
            return True
        if not self.two_phase:
            return False
        if body == "prepare":
            self._on_prepare(msg)
            return True
        if body == "commit":
            self._on_resolve(msg, commit=True)
            return True
        if body == "abort":
            self._on_resolve(msg, commit=False)
            return True
        return False

    def _on_batch(self, batch: pb.Batch) -> None:
        outputs = [Output(e.key, e.payload, e.event_time) for e in batch.events]
        try:
            self.sink.write(batch.epoch, outputs)
        except Exception as exc:
            self.fail(
                pb.ERROR_CODE_INTERNAL,
                f"{self.name}.write() failed on batch {batch.batch_id} "
                f"(epoch {batch.epoch}, {len(outputs)} outputs): "
                f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT],
                batch.batch_id,
            )
        frame = pb.Frame()
        frame.reply.batch_id = batch.batch_id
        self.send(frame)
        self.progress()

    def _on_prepare(self, msg: pb.Prepare) -> None:
        assert isinstance(self.sink, TwoPhaseSink)
        self.newest_incarnation = max(self.newest_incarnation, msg.incarnation)
        frame = pb.Frame()
        frame.prepared.epoch = msg.epoch
        try:
            self.sink.prepare(msg.epoch, msg.incarnation)
            frame.prepared.ok = True
        except Exception as exc:
            error = f"{self.name}.prepare({msg.epoch}) failed: {type(exc).__name__}: {exc}"
            log(error)
            frame.prepared.ok = False
            frame.prepared.error = error[:_MAX_ERROR_TEXT]
        self.send(frame)

    def _on_resolve(self, msg: Any, commit: bool) -> None:
        assert isinstance(self.sink, TwoPhaseSink)
        what = "commit" if commit else "abort"
        if msg.incarnation < self.newest_incarnation:
            log(
                f"ignoring {what} of epoch {msg.epoch} from engine incarnation "
                f"{msg.incarnation}, older than {self.newest_incarnation}"
            )
            return
        self.newest_incarnation = msg.incarnation
        try:
            (self.sink.commit if commit else self.sink.abort)(msg.epoch)
        except Exception as exc:
            # The epoch stays prepared: the next connection lists it in
            # InDoubt and the engine decides it again.
            self.fail(
                pb.ERROR_CODE_INTERNAL,
                f"{self.name}.{what}({msg.epoch}) failed: {type(exc).__name__}: {exc}"[
                    :_MAX_ERROR_TEXT
                ],
            )
        frame = pb.Frame()
        frame.resolved.epoch = msg.epoch
        frame.resolved.committed = commit
        self.send(frame)
        self.progress()
