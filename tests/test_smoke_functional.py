from logd._pb.logd_pb2 import INFO, Msg
from support import LogdProcess, wait_for


def test_written_event_is_read_back(logd: LogdProcess) -> None:
    logd.write(Msg(env="prod", svc="api", lvl=INFO, txt="hello"))
    events = wait_for(lambda: logd.query(svc="api"))
    assert events[0]["txt"] == "hello"
    assert events[0]["lvl"] == "INFO"
