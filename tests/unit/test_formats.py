from datetime import UTC, datetime, timedelta, timezone

from service.web.api import formats


def test_quota_units_follow_the_seed():
    assert formats.domain_quota(10240) == "10GB"
    assert formats.domain_quota(1536) == "1536MB"
    assert formats.mailbox_quota(1024) == "1024MB"


def test_dates_are_utc_day_month_year():
    late = datetime(2026, 4, 14, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert formats.day(late) == "15-04-2026"
    assert formats.day(datetime(2026, 4, 14, tzinfo=UTC)) == "14-04-2026"


def test_task_body_shows_generated_passwords_until_they_expire():
    task = {"id": 7, "type": "mailbox_bulk", "status": "completed", "domain": "example.com",
            "progress_done": 2, "progress_total": 2,
            "results": {"a@example.com": {"status": "Created successfully.", "generated": True},
                        "b@example.com": {"status": "Already exists."}}}
    body = formats.task_body(task, {"a@example.com": "s3cret"})
    assert body == {
        "Task_id": 7, "total_email": 2, "domain": "example.com", "status": "completed",
        "task_id": "7",
        "results": {"a@example.com": {"status": "Created successfully.", "password": "s3cret"},
                    "b@example.com": {"status": "Already exists."}},
    }
    assert formats.task_body(task, {})["results"]["a@example.com"]["password"] is None
    running = formats.task_body({**task, "status": "processing", "progress_done": 1}, {})
    assert running["progress"] == {"done": 1, "total": 2}
