"""The original Neon Worker API's three usage examples, as written there (``neon_worker`` ->
``neon_nb``).

Changes from the original text, each marked ``# original:``: the undefined ``your_processing_function``
is defined, ``time`` is imported, and the sleep of the first example is shortened.
"""

from __future__ import annotations

import threading
import time  # original: the first example uses time.sleep without importing it
from concurrent.futures import ThreadPoolExecutor

from neon_nb import NeonWorker, Task


def test_basic_usage():
    from neon_nb import NeonWorker, Task

    # Create worker with 4 threads
    worker = NeonWorker(max_workers=4, queue_size=100)
    worker.start()

    # Define a task function
    def process_data(data_id, processing_time=1.0):
        time.sleep(processing_time)
        return f"Processed {data_id}"

    # Add tasks with priority
    task = Task(
        id="task_1",
        function=process_data,
        args=("data_123",),
        kwargs={"processing_time": 0.05},  # original: 0.5
        priority=1,  # Higher priority = higher number
    )

    future = worker.add_task(task)

    # Monitor progress
    status = worker.get_status()
    print(f"Completed: {status['completed_tasks']}")
    assert status["completed_tasks"] in (0, 1)

    # Graceful shutdown
    report = worker.shutdown(timeout=30.0)

    assert report.clean and report.succeeded == 1
    assert future.result(timeout=0) == "Processed data_123"
    assert worker.get_status()["completed_tasks"] == 1
    assert worker.get_task_status("task_1").priority == 1


def test_configuration_management():
    from neon_nb import get_config, update_config

    # Get current configuration
    config = get_config()
    print(f"Max workers: {config.max_workers}")
    assert config.max_workers == 4

    # Update configuration (thread-safe)
    update_config(
        max_workers=8,
        queue_size=200,
        retry_attempts=5,
    )

    new = get_config()
    assert (new.max_workers, new.queue_size, new.retry_attempts) == (8, 200, 5)
    assert config.max_workers == 4  # the earlier snapshot is immutable
    # A worker created now starts from the updated configuration.
    worker = NeonWorker()
    assert worker.config.max_workers == 8 and worker.config.queue_size == 200
    worker.shutdown()


def test_high_concurrency():
    worker = NeonWorker(max_workers=8, queue_size=500)
    worker.start()

    processed = []
    lock = threading.Lock()

    def your_processing_function(data):  # original: left undefined there
        with lock:
            processed.append((threading.current_thread().name, data))
        return data.upper()

    def add_tasks_batch(batch_id, num_tasks):
        """Add multiple tasks from different threads safely"""
        for i in range(num_tasks):
            task = Task(
                id=f"batch_{batch_id}_task_{i}",
                function=your_processing_function,
                args=(f"data_{i}",),
                priority=batch_id,  # Different batch priorities
            )
            worker.add_task(task)

    # Add tasks from multiple threads concurrently
    with ThreadPoolExecutor(max_workers=5) as executor:
        futures = []
        for batch_id in range(5):
            future = executor.submit(add_tasks_batch, batch_id, 100)
            futures.append(future)

        # Wait for all batches to be submitted
        for future in futures:
            future.result()

    # Wait for all processing to complete
    worker.wait_for_completion()
    worker.shutdown()

    status = worker.get_status()
    assert status["submitted_tasks"] == status["completed_tasks"] == 500
    assert status["failed_tasks"] == 0 and status["state"] == "stopped"
    assert len(processed) == 500
    assert sorted(d for _, d in processed) == sorted(f"data_{i}" for i in range(100) for _ in range(5))
    assert {name for name, _ in processed} <= {f"{worker.name}-worker_{n}" for n in range(8)}
    info = worker.get_task_status("batch_3_task_42")
    assert info.state == "succeeded" and info.priority == 3

