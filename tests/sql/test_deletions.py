"""Deletions by the rules, in SQL: a complete snapshot marks what it lacks, reconciliation marks missing orders and
queues the days of gaps."""

import psycopg
import pytest
from psycopg import sql

from tests.jobs import export_job, import_job

V1, V2 = "gid://shopify/ProductVariant/1", "gid://shopify/ProductVariant/2"
PRODUCT = "gid://shopify/Product/9"


def _variant(gid: str) -> str:
    return (
        f'{{"id": "{gid}", "sku": "S{gid[-1]}", "title": "t", "price": "1.00", "inventoryQuantity": 1, '
        f'"updatedAt": "2025-08-01T00:00:00Z", "product": {{"id": "{PRODUCT}", "title": "p"}}}}'
    )


def _order(number: int, updated: str = "2025-09-02T00:00:00Z") -> str:
    return (
        f'{{"id": "gid://shopify/Order/{number}", "createdAt": "2025-09-01T0{number}:00:00Z", '
        f'"updatedAt": "{updated}"}}'
    )


def _deleted(db: psycopg.Connection, table: str) -> dict[str, bool]:
    return {
        i: d
        for i, d in db.execute(
            sql.SQL("select id, deleted_at is not null from {} order by id").format(sql.Identifier("shopify", table))
        )
    }


def test_a_complete_snapshot_marks_what_it_lacks_and_only_a_later_export_revives(db: psycopg.Connection) -> None:
    from tests.jobs import job

    import_job(db, export_job(db, [_variant(V1), _variant(V2)], day="2025-09-01", entity="skus"))
    second = export_job(db, [_variant(V1)], day="2025-09-02", entity="skus")
    import_job(db, second)
    assert _deleted(db, "skus") == {V1: False, V2: True}
    (at,) = db.execute("select deleted_at from shopify.skus where id = %s", (V2,)).fetchone()
    assert at == job(db, second["job_id"])["operation_started_at"]  # the start of the export that missed it
    import_job(db, export_job(db, [_variant(V1), _variant(V2)], day="2025-09-03", entity="skus"))
    assert _deleted(db, "skus") == {V1: False, V2: False}
    # A webhook says V2 is gone; an export that started before it does not bring it back, a later one does.
    payload = {"id": 9, "admin_graphql_api_id": PRODUCT, "variants": [{"id": 1, "admin_graphql_api_id": V1}],
               "updated_at": db.execute("select now()::text").fetchone()[0]}  # newer than the variants  # fmt: skip
    hook = "select bulk_sync.webhook_deleted(%s, 'de.myshopify.com', 'products/update', %s::jsonb)"
    assert db.execute(hook, ("w1", psycopg.types.json.Jsonb(payload))).fetchone() == ("1 variants deleted",)
    assert db.execute(hook, ("w1", psycopg.types.json.Jsonb(payload))).fetchone() == ("duplicate",)
    older = export_job(db, [_variant(V1), _variant(V2)], day="2025-09-04", entity="skus")
    db.execute("update bulk_sync.jobs set operation_started_at = now() - interval '1 hour' where id = %s",
               (older["job_id"],))  # fmt: skip
    import_job(db, older)
    assert _deleted(db, "skus") == {V1: False, V2: True}
    import_job(db, export_job(db, [_variant(V1), _variant(V2)], day="2025-09-05", entity="skus"))
    assert _deleted(db, "skus") == {V1: False, V2: False}
    no_list = {"id": 9, "admin_graphql_api_id": PRODUCT}  # products/update without variants says nothing
    assert db.execute(hook, ("w2", psycopg.types.json.Jsonb(no_list))).fetchone() == ("0 variants deleted",)
    gone = db.execute(hook.replace("products/update", "products/delete"), ("w3", psycopg.types.json.Jsonb(no_list)))
    assert gone.fetchone() == ("2 variants deleted",)


def test_a_variant_twice_in_a_snapshot_counts_once_from_its_last_line(db: psycopg.Connection) -> None:
    from tests.jobs import job

    # one line per batch: the second V1 meets the root the first recorded (the plain insert fails, the upsert runs)
    db.execute("update bulk_sync.settings set import_batch_size = 1")
    import_job(db, export_job(db, [_variant(V1), _variant(V2)], day="2025-09-01", entity="skus"))
    again = _variant(V1).replace('"sku": "S1"', '"sku": "again"')
    task = export_job(db, [_variant(V1), again, _variant(V2), again], day="2025-09-02", entity="skus")
    import_job(db, task)
    done = job(db, task["job_id"])
    assert (done["status"], done["lines_processed"], done["lines_rejected"]) == ("completed", 4, 0)
    assert _deleted(db, "skus") == {V1: False, V2: False}
    assert db.execute("select sku from shopify.skus where id = %s", (V1,)).fetchone() == ("again",)


def test_reconciliation_marks_missing_orders_and_queues_the_days_of_gaps(db: psycopg.Connection) -> None:

    import_job(db, export_job(db, [_order(1), _order(2), _order(3)], day="2025-09-01"))
    # Shopify has 1 as stored, 3 newer, 4 never seen; 2 is gone
    ids = [_order(1), _order(3, "2025-09-05T00:00:00Z"), _order(4)]
    import_job(db, export_job(db, ids, day="2025-09-01", entity="order_ids"))
    assert _deleted(db, "orders") == {
        "gid://shopify/Order/1": False, "gid://shopify/Order/2": True, "gid://shopify/Order/3": False,
    }  # fmt: skip
    queued = db.execute(
        "select entity, start_date::text, status from bulk_sync.jobs where entity = 'orders' and status <> 'completed'"
    ).fetchall()
    assert queued == [("orders", "2025-09-01", "starting")]  # the gap's day, exported again (and dispatched)
    assert db.execute("select bulk_sync.enqueue_reconcile('2025-09-01', '2025-09-01')").fetchone() == (1,)
    assert db.execute("select bulk_sync.enqueue_reconcile('2025-09-01', '2025-09-01')").fetchone() == (0,)  # live
    with pytest.raises(psycopg.Error, match="invalid date range") as bad:
        db.execute("select bulk_sync.enqueue_reconcile('2025-09-02', '2025-09-01')")
    assert bad.value.sqlstate == "BS001"


def test_an_empty_reconciliation_deletes_the_whole_window(db: psycopg.Connection) -> None:
    from tests.jobs import claim_task, report

    import_job(db, export_job(db, [_order(1), _order(2)], day="2025-09-01"))
    db.execute("select bulk_sync.enqueue_reconcile('2025-09-01', '2025-09-01')")
    (jid,) = db.execute("select id from bulk_sync.jobs where entity = 'order_ids'").fetchone()
    (start,) = claim_task(db, jid, "start")
    report(db, "report_operation_started", jid, start["fence"], "gid://shopify/BulkOperation/77")
    (poll,) = claim_task(db, jid, "poll")
    report(db, "report_poll_result", jid, poll["fence"], "COMPLETED", None, 0, None, None)  # Shopify: no url
    assert _deleted(db, "orders") == {"gid://shopify/Order/1": True, "gid://shopify/Order/2": True}
    assert db.execute("select count(*) from shopify.live_order_line_items").fetchone() == (0,)


def test_a_products_update_writes_the_product_only_when_newer_than_the_stored_row(db: psycopg.Connection) -> None:
    product = (
        f'{{"id": "{PRODUCT}", "title": "p", "handle": "p-9", "productType": "Tee", "vendor": "V", '
        '"status": "ACTIVE", "tags": ["a"], "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2025-08-01T00:00:00Z", '
        '"publishedAt": "2025-01-02T00:00:00Z"}'
    )
    import_job(db, export_job(db, [product], entity="products"))
    import_job(db, export_job(db, [_variant(V1)], entity="skus"))
    hook = "select bulk_sync.webhook_deleted(%s, 'de.myshopify.com', 'products/update', %s::jsonb, %s)"
    rest = {"id": 9, "admin_graphql_api_id": PRODUCT, "title": "New", "status": "draft", "tags": "x, summer sale",
            "published_at": None, "updated_at": "2025-07-01T00:00:00Z"}  # fmt: skip
    stored = "select title, status, tags, published_at, updated_at::text from shopify.products"
    was = db.execute(stored).fetchone()
    # older than the stored product: nothing
    assert db.execute(hook, ("u1", psycopg.types.json.Jsonb(rest), None)).fetchone() == ("0 variants deleted",)
    # newer, but triggered before the export that wrote the row started: nothing
    rest["updated_at"] = "2025-09-01T00:00:00Z"
    before = db.execute("select min(operation_started_at) - interval '1 minute' from bulk_sync.jobs").fetchone()[0]
    assert db.execute(hook, ("u2", psycopg.types.json.Jsonb(rest), before)).fetchone() == ("0 variants deleted",)
    assert db.execute(stored).fetchone() == was
    said = db.execute(hook, ("u3", psycopg.types.json.Jsonb(rest), None)).fetchone()
    assert said == ("0 variants deleted; the product updated",)
    assert db.execute(stored).fetchone() == ("New", "DRAFT", ["x", "summer sale"], None, "2025-09-01 00:00:00+00")
    assert db.execute("select product_title from shopify.skus").fetchall() == [("New",)]
    assert db.execute("select handle, vendor from shopify.products").fetchone() == ("p-9", "V")  # absent: kept
