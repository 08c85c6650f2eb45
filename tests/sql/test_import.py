"""The import: staged JSONL as Shopify writes it into shopify.*, in batches, newer wins, nothing lost."""

import datetime as dt
import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from runner.simulator.data import Catalogue, Settings, ShopData
from runner.simulator.export import Export
from runner.simulator.truth import COLUMNS as TRUTH_COLUMNS
from runner.simulator.truth import key
from runner.simulator.truth import rows as truth_rows
from tests.jobs import claim, claim_task, export_job, import_job, job, make_due, report, table
from tests.sim import answer_from

FIXTURE = (Path(__file__).parents[1] / "fixtures" / "orders_export.jsonl").read_text().splitlines(keepends=True)
COLUMNS = TRUTH_COLUMNS


# Order columns the fixture (a capture from before they were mirrored) has no fields for.
NOT_IN_FIXTURE = (
    "tags", "source_name", "test", "presentment_currency", "subtotal_price_presentment", "total_price_presentment",
    "total_tax_presentment", "total_discounts", "total_discounts_presentment", "total_shipping",
    "total_shipping_presentment", "shipping_country", "shipping_province", "shipping_zip", "discount_codes",
)  # fmt: skip


def test_shopify_shaped_export_imports_every_field(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.settings set import_batch_size = 2")  # parents and children in different batches
    task = export_job(db, FIXTURE)
    import_job(db, task)
    done = job(db, task["job_id"])
    assert (done["status"], done["lines_processed"], done["lines_rejected"]) == ("completed", 7, 0)
    orders = {o["id"]: o for o in table(db, "orders")}
    first = orders["gid://shopify/Order/6280604516516"]
    assert first == {
        "id": "gid://shopify/Order/6280604516516", "shop": "DE", "name": "HCDEV#2611",
        "created_at": "2025-09-01T11:12:01Z", "updated_at": "2025-09-03T08:02:11Z",
        "processed_at": "2025-09-01T11:12:01Z", "cancelled_at": None, "currency": "EUR", "subtotal_price": "73.0",
        "total_price": "73.0", "current_total_price": "43.05", "total_tax": "11.66", "total_refunded": "29.95",
        "financial_status": "PARTIALLY_REFUNDED", "fulfillment_status": "FULFILLED",
        "customer_id": "gid://shopify/Customer/7001", "email": "a@example.com",
    } | dict.fromkeys(NOT_IN_FIXTURE)  # fmt: skip
    assert orders["gid://shopify/Order/6280606000000"]["cancelled_at"] == "2025-09-01T13:00:00Z"
    transactions = table(db, "order_transactions")
    assert [(t["id"], t["order_id"], t["kind"], t["gateway"]) for t in transactions] == [
        ("gid://shopify/OrderTransaction/7400324399268", first["id"], "AUTHORIZATION", "bogus")
    ]
    items = {i["id"]: i for i in table(db, "order_line_items")}
    assert len(items) == 4
    assert items["gid://shopify/LineItem/16015145894052"]["order_id"] == "gid://shopify/Order/6280604516516"
    assert items["gid://shopify/LineItem/16015145894052"]["unit_price"] == "21.525"  # numeric, never float
    custom = items["gid://shopify/LineItem/16015145926820"]
    assert (custom["sku"], custom["variant_id"], custom["product_id"]) == (None, None, None)
    assert table(db, "refunds") == [
        {"id": "gid://shopify/Refund/1001388802105", "shop": "DE", "order_id": "gid://shopify/Order/6280604516516",
         "created_at": "2025-09-03T08:02:10Z", "updated_at": None, "note": "wrong size", "total_refunded": "29.95",
         "currency": "EUR"}
    ]  # fmt: skip
    # unknown fields are kept in raw, slashes unescaped
    raw = db.execute("select raw from shopify.orders where id = 'gid://shopify/Order/6280604516516'").fetchone()[0]
    assert raw["transactions"][0]["gateway"] == "bogus"
    item_raw = db.execute(
        "select raw from shopify.order_line_items where id = 'gid://shopify/LineItem/16015145861284'"
    ).fetchone()[0]
    assert item_raw["unfulfilledQuantity"] == 0 and "__parentId" not in item_raw
    # staging is gone once the job completed
    assert db.execute("select count(*) from bulk_sync.staging").fetchone() == (0,)


def _reimport(db: psycopg.Connection, lines: list[str], day: str) -> dict:
    task = export_job(db, lines, day)
    import_job(db, task)
    return job(db, task["job_id"])


def _order(updated: str, items: list[str], refunds: list[str], total: str = "10.0") -> list[str]:
    oid = "gid:\\/\\/shopify\\/Order\\/1"
    refund_list = ",".join(
        f'{{"id":"gid:\\/\\/shopify\\/Refund\\/{r}","createdAt":"{updated}","note":null,'
        f'"totalRefundedSet":{{"shopMoney":{{"amount":"1.0","currencyCode":"EUR"}}}}}}'
        for r in refunds
    )
    head = (
        f'{{"id":"{oid}","name":"#1","createdAt":"2025-09-01T10:00:00Z","updatedAt":"{updated}",'
        f'"totalPriceSet":{{"shopMoney":{{"amount":"{total}","currencyCode":"EUR"}}}},"refunds":[{refund_list}]}}\n'
    )
    return [head] + [
        f'{{"id":"gid:\\/\\/shopify\\/LineItem\\/{i}","sku":"S{i}","__parentId":"{oid}"}}\n' for i in items
    ]


def test_newer_wins_and_children_are_replaced_as_a_set(db: psycopg.Connection) -> None:
    _reimport(db, _order("2025-09-02T00:00:00Z", ["11", "12"], ["21", "22"], "10.0"), "2025-09-01")
    # an older version changes nothing, and its children do not land
    older = _reimport(db, _order("2025-09-01T12:00:00Z", ["13"], ["23"], "5.0"), "2025-09-02")
    assert older["status"] == "completed" and older["lines_rejected"] == 0
    assert [o["total_price"] for o in table(db, "orders")] == ["10.0"]
    assert [i["id"] for i in table(db, "order_line_items")] == [
        "gid://shopify/LineItem/11",
        "gid://shopify/LineItem/12",
    ]
    assert [r["id"] for r in table(db, "refunds")] == ["gid://shopify/Refund/21", "gid://shopify/Refund/22"]
    # an equal or newer version replaces the order, its line items and refunds: removed ones disappear
    _reimport(db, _order("2025-09-02T00:00:00Z", ["12", "14"], ["22"], "8.0"), "2025-09-03")
    assert [o["total_price"] for o in table(db, "orders")] == ["8.0"]
    assert [i["id"] for i in table(db, "order_line_items")] == [
        "gid://shopify/LineItem/12",
        "gid://shopify/LineItem/14",
    ]
    assert [r["id"] for r in table(db, "refunds")] == ["gid://shopify/Refund/22"]


BAD_LINES = [
    ('{"id":"gid:\\/\\/shopify\\/Order\\/5","updatedAt":"2025-09-01T00:00:00Z"', "not JSON"),
    ("[1,2,3]", "not a JSON object"),
    ('{"name":"#9"}', "missing id"),
    ('{"id":"gid:\\/\\/shopify\\/Customer\\/3"}', "unexpected object type Customer in a orders export"),
    ('{"id":"gid:\\/\\/shopify\\/LineItem\\/8","__parentId":"gid:\\/\\/shopify\\/Order\\/404"}',
     "orphan child: parent gid://shopify/Order/404 is not earlier in this export"),
    ('{"id":"gid:\\/\\/shopify\\/LineItem\\/9"}', "LineItem without a __parentId"),
    ('{"id":"gid:\\/\\/shopify\\/Order\\/6","refunds":[{"note":"x"}]}', "refunds is not a list of refunds with ids"),
    ('{"id":"nonsense"}', "malformed id nonsense"),
]  # fmt: skip


def test_malformed_lines_are_quarantined_and_everything_else_imports(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.settings set import_batch_size = 3")
    lines = list(FIXTURE[:3]) + [line + "\n" for line, _ in BAD_LINES] + list(FIXTURE[3:])
    task = export_job(db, lines)
    import_job(db, task)
    done = job(db, task["job_id"])
    assert (done["status"], done["lines_total"], done["lines_rejected"]) == ("completed", 15, len(BAD_LINES))
    rejects = db.execute("select line_no, reason, line from bulk_sync.rejects order by line_no").fetchall()
    assert [(n, r) for n, r, _ in rejects] == [(4 + i, reason) for i, (_, reason) in enumerate(BAD_LINES)]
    assert rejects[0][2] == BAD_LINES[0][0]
    assert len(table(db, "orders")) == 3 and len(table(db, "order_line_items")) == 4
    progress = db.execute("select rows_imported, rows_rejected from bulk_sync.progress").fetchone()
    assert progress == (15 - len(BAD_LINES), len(BAD_LINES))


def test_a_lost_staged_line_fails_the_job_loudly(db: psycopg.Connection) -> None:
    task = export_job(db, FIXTURE)
    db.execute("delete from bulk_sync.staging where line_no = 7")
    import_job(db, task)
    failed = job(db, task["job_id"])
    assert failed["status"] == "failed"
    assert failed["last_error"] == (
        "import incomplete: 6 lines processed (0 quarantined) of 7 staged; Shopify reported 7 objects"
    )


def test_download_must_match_what_is_staged(db: psycopg.Connection) -> None:
    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01', '{orders}')")
    (start,) = claim(db)
    jid = start["job_id"]
    report(db, "report_operation_started", jid, start["fence"], "gid://shopify/BulkOperation/1")
    (poll,) = claim_task(db, jid, "poll")
    size = sum(len(line.encode()) for line in FIXTURE)
    report(db, "report_poll_result", jid, poll["fence"], "COMPLETED", None, 7, size, "https://x.example/a")
    (dl,) = claim_task(db, jid, "download")
    with db.transaction():
        db.execute("insert into bulk_sync.staging values (%s, 1, '{}'), (%s, 3, '{}')", (jid, jid))
        report(db, "report_download_finished", jid, dl["fence"], 7, size)
    failed = job(db, jid)
    assert failed["status"] == "exporting" and "(-1 staged)" in failed["last_error"]


def _simulated_export(shop: ShopData, query: str) -> list[str]:
    return [line for line, _ in Export.of(shop, query).lines()]


@pytest.fixture
def shop_data() -> ShopData:
    settings = Settings(first_day=dt.date(2025, 9, 1), last_day=dt.date(2025, 9, 3), orders_per_day=400)
    return ShopData("DE", 1, settings, Catalogue(settings))


def _snapshot(db: psycopg.Connection) -> dict[str, list[dict]]:
    return {name: table(db, name) for name in COLUMNS}


def test_import_equals_the_simulators_ground_truth(db: psycopg.Connection, shop_data: ShopData) -> None:
    db.execute("update bulk_sync.settings set import_batch_size = 500")
    for entity, day in (("orders", "2025-09-02"), ("skus", "2025-09-02")):
        db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
        db.execute("select bulk_sync.enqueue_backfill(%s, %s, %s)", (day, day, [entity]))
        (start,) = [t for t in claim(db, qty=100) if t["task"] == "start"]
        lines = _simulated_export(shop_data, start["query"])  # the query bulk-sync sends, run by the simulator
        db.execute("select bulk_sync.cancel_jobs()")
        task = export_job(db, lines, day, entity)
        import_job(db, task, answer_from(shop_data))  # the refunds' lines fetched from the simulator's data
        assert job(db, task["job_id"])["status"] == "completed"
    day_orders = [o for o in truth_rows(shop_data, "orders") if o["created_at"].startswith("2025-09-02")]
    ids = {o["id"] for o in day_orders}
    assert table(db, "orders") == sorted(day_orders, key=lambda r: r["id"])
    items = [i for i in truth_rows(shop_data, "order_line_items") if i["order_id"] in ids]
    assert table(db, "order_line_items") == sorted(items, key=lambda r: r["id"])
    refunds = [r for r in truth_rows(shop_data, "refunds") if r["order_id"] in ids]
    assert refunds and table(db, "refunds") == sorted(refunds, key=lambda r: r["id"])
    refund_ids = {r["id"] for r in refunds}
    returned = [r for r in truth_rows(shop_data, "refund_line_items") if r["refund_id"] in refund_ids]
    assert returned and table(db, "refund_line_items") == sorted(returned, key=key("refund_line_items"))
    assert table(db, "skus") == sorted(truth_rows(shop_data, "skus"), key=lambda r: r["id"])


def test_killed_import_resumes_to_the_same_result(db: psycopg.Connection, dsn: str, shop_data: ShopData) -> None:
    db.execute("update bulk_sync.settings set import_batch_size = 100")
    query = "{ orders { edges { node { id name createdAt updatedAt totalPriceSet { shopMoney { amount currencyCode } } refunds { id createdAt note totalRefundedSet { shopMoney { amount currencyCode } } } lineItems { edges { node { id sku quantity currentQuantity variant { id } } } } } } } }"  # noqa: E501
    lines = _simulated_export(shop_data, query)
    task = export_job(db, lines)
    # Another session inserts, and holds uncommitted, an order of a later batch: the import stops at that batch
    # whatever the machine's speed, and is killed there.
    at = next(i for i, line in enumerate(lines) if i >= 1000 and '"__parentId"' not in line)
    blocker = psycopg.connect(dsn)
    held = json.loads(lines[at])["id"]
    blocker.execute("insert into shopify.orders (id, shop, raw, import_job) values (%s, 'DE', '{}', 0)", (held,))
    victim = psycopg.connect(dsn, autocommit=True)
    pid = victim.info.backend_pid
    worker = threading.Thread(target=_call_import, args=(victim, task))
    worker.start()
    deadline = time.monotonic() + 120  # guards a hang only
    while not db.execute("select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the import never reached the held order"
        time.sleep(0.01)
    db.execute("select pg_terminate_backend(%s, 60000)", (pid,))  # returns once the backend is gone
    worker.join()
    blocker.rollback()
    blocker.close()
    halfway = job(db, task["job_id"])
    assert halfway["status"] == "importing" and halfway["lines_processed"] == at // 100 * 100 >= 1000  # whole batches
    # the runner is gone: its lease expires, the job is handed out again and resumes where it stopped
    db.execute("update bulk_sync.jobs set lease_expires_at = now() - interval '1 s' where id = %s", (task["job_id"],))
    make_due(db)
    (again,) = claim_task(db, task["job_id"], "import")
    import_job(db, again)
    resumed = job(db, task["job_id"])
    assert (resumed["status"], resumed["lines_processed"], resumed["lines_rejected"]) == ("completed", len(lines), 0)
    interrupted = _snapshot(db)
    # the same export imported in one go, from scratch, gives the same rows
    db.execute("truncate shopify.orders, shopify.order_line_items, shopify.refunds, shopify.skus cascade")
    db.execute("update bulk_sync.settings set import_batch_size = 100000")
    db.execute("select bulk_sync.cancel_jobs()")
    import_job(db, export_job(db, lines, "2025-09-02"))
    assert _snapshot(db) == interrupted
    assert len(interrupted["orders"]) > 1000


def _call_import(conn: psycopg.Connection, task: dict) -> None:
    try:
        conn.execute("call bulk_sync.import(%s, %s)", (task["job_id"], task["fence"]))
    except psycopg.OperationalError:
        pass  # terminated, as intended
    finally:
        conn.close()


def test_two_callers_never_import_twice(db: psycopg.Connection, dsn: str, shop_data: ShopData) -> None:
    db.execute("update bulk_sync.settings set import_batch_size = 50")
    lines = _simulated_export(shop_data, "{ productVariants { edges { node { id sku price updatedAt } } } }")
    task = export_job(db, lines, entity="skus")
    results = []

    def caller() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("call bulk_sync.import(%s, %s)", (task["job_id"], task["fence"]))
            results.append(True)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = job(db, task["job_id"])
    assert (done["status"], done["lines_processed"]) == ("completed", len(lines))
    assert db.execute("select count(*) from shopify.skus").fetchone() == (len(lines),)
    stale = db.execute(
        "select count(*) from bulk_sync.job_runs where job_id = %s and status = 'stale'", (task["job_id"],)
    ).fetchone()[0]
    assert stale >= 2 and len(results) == 3


def test_the_tick_imports_what_no_runner_took(db: psycopg.Connection) -> None:
    jid = export_job(db, FIXTURE, take=False)["job_id"]
    assert job(db, jid)["status"] == "ready_to_import"
    assert db.execute("select bulk_sync.tick()").fetchone()[0]["import_batches"] == 0  # runners get 5 s first
    db.execute("alter table bulk_sync.jobs disable trigger jobs_guard")  # to backdate updated_at
    db.execute("update bulk_sync.jobs set updated_at = now() - interval '1 min' where id = %s", (jid,))
    db.execute("alter table bulk_sync.jobs enable trigger jobs_guard")
    assert db.execute("select bulk_sync.tick()").fetchone()[0]["import_batches"] == 1
    assert job(db, jid)["status"] == "fetching"  # its refund's lines are for a runner to fetch
    assert len(table(db, "orders")) == 3
    # the runners' import message for it is stale now: dropped, not imported again; the fetch is handed out
    make_due(db)
    assert [t["task"] for t in claim(db)] == ["fetch"]


def test_bulk_queries_are_valid_for_shopify(db: psycopg.Connection) -> None:
    """The bulk queries bulk-sync sends (one per entity) pass Shopify's schema (the simulator's copy of 2026-01, as
    2025-10 and 2026-01 see it) and its bulk-query rules."""
    from runner.simulator.bulk_rules import bulk_query_errors

    db.execute("select bulk_sync.add_shop('DE', 'de.myshopify.com')")
    db.execute("select bulk_sync.enqueue_backfill('2025-09-01', '2025-09-01')")
    db.execute("select bulk_sync.add_shop('NL', 'nl.myshopify.com')")  # five operations a shop at a time
    db.execute("select bulk_sync.enqueue_reconcile('2025-09-01', '2025-09-01', '{NL}')")
    queries = {t["entity"]: t["query"] for t in claim(db, qty=20)}
    assert set(queries) == {"orders", "refunds", "skus", "order_ids", "customers", "products", "customer_ids"}
    for query in queries.values():
        for version in ("2025-10", "2026-01"):
            document, errors = bulk_query_errors(query, version)
            assert errors == [] and document is not None
    assert "created_at:>='2025-09-01T00:00:00Z' created_at:<'2025-09-02T00:00:00Z'" in queries["orders"]
    assert "sortKey: CREATED_AT" in queries["orders"]
    assert "updated_at:>='2025-09-01T00:00:00Z'" in queries["refunds"] and "sortKey" not in queries["refunds"]
    assert "updated_at:>='2025-09-01T00:00:00Z'" in queries["customers"] and "query:" not in queries["products"]
    assert queries["customer_ids"] == "{ customers { edges { node { id createdAt updatedAt } } } }"  # the whole shop
    assert json.dumps(queries)  # plain text


def test_staging_is_kept_for_the_retention_then_pruned(db: psycopg.Connection) -> None:
    db.execute("update bulk_sync.settings set staging_retention_seconds = 3600")
    task = export_job(db, FIXTURE)
    import_job(db, task)
    assert db.execute("select count(*) from bulk_sync.staging").fetchone() == (7,)
    assert db.execute("select bulk_sync.tick()").fetchone()[0]["staging_lines_pruned"] == 0
    db.execute("update bulk_sync.settings set staging_retention_seconds = 0")
    assert db.execute("select bulk_sync.tick()").fetchone()[0]["staging_lines_pruned"] == 7
    assert db.execute("select count(*) from bulk_sync.import_roots").fetchone() == (0,)


def test_a_long_lived_import_session_keeps_its_temp_tables_small(db: psycopg.Connection) -> None:
    """Nothing vacuums temp tables: without truncation the batch table grew by every batch a session imported."""
    db.execute("update bulk_sync.settings set import_batch_size = 500")
    note = "x" * 1000
    sizes = []
    for day in range(1, 11):
        lines = [
            f'{{"id":"gid:\\/\\/shopify\\/Order\\/{day * 10_000 + i}","updatedAt":"2025-09-01T00:00:00Z",'
            f'"note":"{note}"}}\n'
            for i in range(1000)
        ]
        task = export_job(db, lines, day=f"2025-09-{day:02d}")
        import_job(db, task)
        assert job(db, task["job_id"])["status"] == "completed"
        sizes.append(db.execute("select pg_relation_size('pg_temp.bulk_sync_batch')").fetchone()[0])
    # 10 jobs x 1,000 lines of ~2 kB (text and jsonb) went through one session's batch table: ~20 MB without
    # truncation; bounded by the 4 MB threshold plus one batch with it.
    assert max(sizes) < 6 * 1024 * 1024, sizes
    assert db.execute("select count(*) from shopify.orders").fetchone()[0] == 10_000


def test_a_batch_never_scans_the_whole_line_items_or_refunds_table(db: psycopg.Connection) -> None:
    """The temp tables get statistics once filled: joined to big shopify tables, they are looked up by index."""
    db.execute(
        """insert into shopify.orders (id, shop, updated_at, raw, import_job)
           select 'gid://shopify/Order/' || n, 'DE', '2025-08-01', '{}', 0 from generate_series(1, 100000) as n"""
    )
    db.execute(
        """insert into shopify.order_line_items (id, shop, order_id, raw, import_job)
           select 'gid://shopify/LineItem/' || n, 'DE', 'gid://shopify/Order/' || (n / 3 + 1), '{}', 0
           from generate_series(1, 60000) as n"""
    )
    db.execute(
        """insert into shopify.refunds (id, shop, order_id, raw, import_job)
           select 'gid://shopify/Refund/' || n, 'DE', 'gid://shopify/Order/' || n, '{}', 0
           from generate_series(1, 100000) as n"""
    )
    db.execute("analyze shopify.orders, shopify.order_line_items, shopify.refunds")
    db.execute("update bulk_sync.settings set import_batch_size = 200")
    lines = []
    for i in range(1, 1001):  # newer versions of existing orders, each with a line item
        order = f"gid:\\/\\/shopify\\/Order\\/{i}"
        lines.append(f'{{"id":"{order}","updatedAt":"2025-09-01T00:00:00Z","refunds":[]}}\n')
        lines.append(f'{{"id":"gid:\\/\\/shopify\\/LineItem\\/{9_000_000 + i}","__parentId":"{order}"}}\n')

    def scans() -> dict[str, int]:
        db.execute("select pg_stat_force_next_flush()")
        return dict(
            db.execute(
                """select relname, seq_scan from pg_stat_user_tables
                   where schemaname = 'shopify' and relname in ('order_line_items', 'refunds')"""
            ).fetchall()
        )

    task = export_job(db, lines)
    before = scans()
    import_job(db, task)
    assert job(db, task["job_id"])["status"] == "completed"
    assert scans() == before  # 10 batches, not one sequential scan of either table
    # orders 1..1000 won: their 2,999 old line items replaced by the export's 1,000, their refunds by none
    assert db.execute("select count(*) from shopify.order_line_items").fetchone()[0] == 60000 - 2999 + 1000
    assert db.execute("select count(*) from shopify.refunds").fetchone()[0] == 100000 - 1000


def test_an_object_twice_in_a_batch_imports_once_from_its_last_valid_line(db: psycopg.Connection) -> None:
    order, item = json.loads(FIXTURE[0]), json.loads(FIXTURE[2])
    lines = [
        *FIXTURE,
        json.dumps({**order, "name": "again"}) + "\n",  # the same order later in the export: this one counts
        json.dumps({**item, "quantity": 7}) + "\n",
        json.dumps({**item, "quantity": 9, "__parentId": None}) + "\n",  # later still, but quarantined
    ]
    task = export_job(db, lines)
    import_job(db, task)
    done = job(db, task["job_id"])
    assert (done["status"], done["lines_total"], done["lines_rejected"]) == ("completed", 10, 1)
    orders, items = table(db, "orders"), table(db, "order_line_items")
    assert len(orders) == 3 and len(items) == 4
    assert [o["name"] for o in orders if o["id"] == order["id"]] == ["again"]
    assert [i["quantity"] for i in items if i["id"] == item["id"]] == [7]


def test_a_line_item_already_stored_is_replaced_in_place(db: psycopg.Connection) -> None:
    # line items go in with a plain insert; an id already there (its order twice in one export, in different
    # batches, or the item under another order before) takes the upsert instead of failing the batch
    db.execute("update bulk_sync.settings set import_batch_size = 2")
    _reimport(db, _order("2025-09-02T00:00:00Z", ["11", "12"], []), "2025-09-01")
    moved = [  # item 12, still stored under order 1, now under order 2
        line.replace("Order\\/1", "Order\\/2").replace('"#1"', '"#2"')
        for line in _order("2025-09-02T00:00:00Z", ["12"], [])
    ]
    first = _order("2025-09-02T00:00:00Z", ["11"], [])
    again = [line.replace('"S11"', '"again"') for line in first]  # order 1 twice: the later one counts
    done = _reimport(db, moved + first + again, "2025-09-02")
    assert (done["status"], done["lines_processed"], done["lines_rejected"]) == ("completed", 6, 0)
    assert [(i["id"], i["order_id"], i["sku"]) for i in table(db, "order_line_items")] == [
        ("gid://shopify/LineItem/11", "gid://shopify/Order/1", "again"),
        ("gid://shopify/LineItem/12", "gid://shopify/Order/2", "S12"),
    ]


def test_an_order_another_import_inserts_meanwhile_is_upserted(db: psycopg.Connection, dsn: str) -> None:
    # new orders go in with a plain insert; one that another session inserts after this batch looked makes the
    # insert fail, and the upsert then takes the whole batch
    task = export_job(db, _order("2025-09-02T00:00:00Z", ["11"], ["21"]), "2025-09-02")
    with psycopg.connect(dsn) as other:
        other.execute(
            "insert into shopify.orders (id, shop, name, updated_at, raw, import_job) "
            "values ('gid://shopify/Order/1', 'DE', 'older', '2025-09-01T00:00:00Z', '{}', 0)"
        )
        errors: list[BaseException] = []
        importer = psycopg.connect(dsn, autocommit=True)

        def run() -> None:
            try:
                import_job(importer, task)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while not db.execute(
            "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (importer.info.backend_pid,)
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the import never waited for the other session's order"
            time.sleep(0.05)
        other.commit()
        thread.join(60)
        importer.close()
    assert errors == []
    assert job(db, task["job_id"])["status"] == "completed"
    assert [(o["name"], o["updated_at"]) for o in table(db, "orders")] == [("#1", "2025-09-02T00:00:00Z")]
    assert [i["id"] for i in table(db, "order_line_items")] == ["gid://shopify/LineItem/11"]
    assert [r["id"] for r in table(db, "refunds")] == ["gid://shopify/Refund/21"]


def test_staged_lines_need_their_job_and_go_with_it(db: psycopg.Connection) -> None:
    task = export_job(db, FIXTURE, take=False)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="job 999999 does not exist"):
        db.execute("insert into bulk_sync.staging values (%s, 100, '{}'), (999999, 1, '{}')", (task["job_id"],))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("insert into bulk_sync.import_roots values (999999, 'gid://shopify/Order/1', true)")
    assert db.execute("select count(*) from bulk_sync.staging").fetchone() == (len(FIXTURE),)
    db.execute("insert into bulk_sync.import_roots values (%s, 'gid://shopify/Order/1', true)", (task["job_id"],))
    db.execute("delete from bulk_sync.job_runs where job_id = %s", (task["job_id"],))
    db.execute("delete from bulk_sync.jobs where id = %s", (task["job_id"],))
    assert db.execute("select count(*) from bulk_sync.staging").fetchone() == (0,)
    assert db.execute("select count(*) from bulk_sync.import_roots").fetchone() == (0,)
