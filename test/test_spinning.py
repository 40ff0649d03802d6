"""BackgroundSpinner: the spin loop of the test harness and of ``clipseg-bag-eval live``.

Real rclpy contexts, real std_msgs messages over shared-memory DDS (conftest.py).  The failure it
guards against: an exception escaping a callback (or rclpy's destroy-while-spinning race) used to
end ``executor.spin()`` in the background thread, after which nothing was ever delivered again
and every later test in the module timed out with "0 messages seen".
"""
from __future__ import annotations

import itertools

import pytest

pytest.importorskip("rclpy")

from std_msgs.msg import String  # noqa: E402

from clipseg_ros.spinning import BackgroundSpinner  # noqa: E402
from ros_helpers import Collector, qos, wait_for  # noqa: E402

pytestmark = pytest.mark.ros
_ids = itertools.count()


@pytest.fixture(params=["single", "multi"])
def ros_context(request):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"spin_test_{next(_ids)}", context=context)
    executor = (SingleThreadedExecutor(context=context) if request.param == "single"
                else MultiThreadedExecutor(num_threads=2, context=context))
    executor.add_node(node)
    yield node, executor, context
    for step in (lambda: executor.shutdown(timeout_sec=2.0), node.destroy_node, context.try_shutdown):
        try:
            step()
        except Exception:  # noqa: BLE001 - a test may have shut the context down already
            pass


def _matched(pub, sub) -> None:
    wait_for(lambda: pub.get_subscription_count() >= 1 and sub.get_publisher_count() >= 1, 15.0,
             what="publisher and subscription to match")


def test_a_raising_callback_is_recorded_and_spinning_goes_on(ros_context):
    node, executor, context = ros_context
    topic = f"/spin_test/raise_{next(_ids)}"
    got = Collector(topic)

    def callback(msg):
        if msg.data == "bad":
            raise ValueError("this callback fails on 'bad'")
        got(msg)

    seen = []
    spinner = BackgroundSpinner(executor, context, on_error=seen.append).start()
    try:
        sub = node.create_subscription(String, topic, callback, qos(True, 10))
        pub = node.create_publisher(String, topic, qos(True, 10))
        _matched(pub, sub)
        pub.publish(String(data="bad"))
        wait_for(lambda: spinner.error_count >= 1, 15.0, what="the callback's exception to be caught")
        pub.publish(String(data="good"))
        assert [m.data for m in got.wait(1, timeout=15.0)] == ["good"]
        assert spinner.alive
        assert spinner.error_count == 1
        assert spinner.errors == ["ValueError: this callback fails on 'bad'"]
        assert len(seen) == 1 and isinstance(seen[0], ValueError)
    finally:
        spinner.stop()
    assert not spinner.alive


def test_subscriptions_destroyed_while_spinning_do_not_stop_delivery(ros_context):
    """Create and destroy subscriptions from this thread while a publisher floods the topic (the
    pattern of the node tests' subscribe/unsubscribe); a subscription made afterwards still gets
    every message."""
    node, executor, context = ros_context
    topic = f"/spin_test/churn_{next(_ids)}"
    spinner = BackgroundSpinner(executor, context).start()
    try:
        pub = node.create_publisher(String, topic, qos(True, 10))
        for i in range(20):
            col = Collector(topic)
            col.sub = node.create_subscription(String, topic, col, qos(True, 10))
            _matched(pub, col.sub)
            for j in range(5):
                pub.publish(String(data=f"{i}.{j}"))
            node.destroy_subscription(col.sub)
        final = Collector(topic)
        final.sub = node.create_subscription(String, topic, final, qos(True, 50))
        wait_for(lambda: pub.get_subscription_count() == 1 and final.sub.get_publisher_count() >= 1,
                 15.0, what="only the final subscription to match")
        for j in range(10):
            pub.publish(String(data=f"final.{j}"))
        assert [m.data for m in final.wait(10, timeout=15.0)] == [f"final.{j}" for j in range(10)]
        assert spinner.alive
    finally:
        spinner.stop()


def test_stop_ends_the_thread_and_a_shut_down_context_ends_it_too(ros_context):
    node, executor, context = ros_context
    spinner = BackgroundSpinner(executor, context, timeout_sec=0.05).start()
    assert spinner.alive
    spinner.stop(timeout=5.0)
    assert not spinner.alive
    again = BackgroundSpinner(executor, context, timeout_sec=0.05).start()
    context.try_shutdown()
    wait_for(lambda: not again.alive, 5.0, what="the spinner to end with its context")
    assert again.error_count == 0
