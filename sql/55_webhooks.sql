-- Webhooks: every delivery is recorded once by its id, so Shopify's retries change nothing. A bulk_operations/finish
-- notification makes the job waiting for that operation poll at once instead of at its next poll time; the deletion
-- topics are in sql/65_deletions.sql.

-- Records a delivery by its X-Shopify-Webhook-Id (kept 3 days: Shopify retries for 48 hours); false when it was
-- handled already.
create or replace function bulk_sync.webhook_received(p_webhook_id text, p_shop text, p_subject text)
returns boolean
language sql as $$
    delete from bulk_sync.webhooks where received_at < now() - interval '3 days';
    with recorded as (
        insert into bulk_sync.webhooks (webhook_id, shop, operation_id, outcome)
        values (bulk_sync.require_text(p_webhook_id, 'webhook id'), p_shop, left(p_subject, 200), 'received')
        on conflict (webhook_id) do nothing
        returning webhook_id
    )
    select exists (select from recorded);
$$;

-- Handles a bulk_operations/finish notification once per webhook id: the job waiting for that operation is polled
-- at once. Returns 'polled', 'duplicate' or 'ignored' (no job waits for it: polled already or now, or not ours).
create or replace function bulk_sync.webhook_finished(p_webhook_id text, p_shop_domain text, p_operation_id text)
returns text
language plpgsql
security definer set search_path = pg_catalog, pg_temp as $$
declare
    v_shop text := (select code from bulk_sync.shops where domain = p_shop_domain);
    v_job bulk_sync.jobs;
    v_outcome text := 'ignored';
begin
    if not bulk_sync.webhook_received(p_webhook_id, v_shop, p_operation_id) then
        return 'duplicate';
    end if;
    select * into v_job from bulk_sync.jobs
    where shop = v_shop and operation_id = p_operation_id and status = 'waiting' and lease_expires_at is null
    for update;
    if found then
        -- A poll now, with the job's fence, and the row says so (its wake-up): whichever poll message comes first is
        -- taken, the other is stale.
        update bulk_sync.jobs set task_due_at = now(), task_msg_id = bulk_sync.send(v_job.id, 'poll', v_job.fence)
        where id = v_job.id;
        perform bulk_sync.audit(v_job.id, 'webhook', 'ok', 'waiting', 'waiting', v_job.fence,
                                'bulk_operations/finish received: polling now');
        v_outcome := 'polled';
    end if;
    update bulk_sync.webhooks set outcome = v_outcome where webhook_id = p_webhook_id;
    return v_outcome;
end;
$$;
