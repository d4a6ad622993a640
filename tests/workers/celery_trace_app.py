"""A Celery app for the trace-propagation test: real broker (the test's Redis prefix and queue), real worker."""

import os

from celery import Celery

import workers.telemetry  # noqa: F401  (connects worker_process_init: instrumentation in each child)

app = Celery("flowgate-trace-test", broker=os.environ["TRACE_TEST_BROKER"], set_as_current=False)
app.conf.update(
    task_default_queue=os.environ["TRACE_TEST_QUEUE"],
    broker_transport_options={"global_keyprefix": os.environ["TRACE_TEST_PREFIX"]},
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task(name="trace_test.run_line")
def run_line(line_no: int) -> int:
    return line_no
