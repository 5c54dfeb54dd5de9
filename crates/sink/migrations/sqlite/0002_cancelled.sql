-- Orders can be cancelled by the shop (pending -> cancelled), giving their units back at once.
-- SQLite cannot change a CHECK in place, so fg_orders is rebuilt with every row, and
-- fg_order_lines with it (it references fg_orders, and a dropped parent would orphan its rows
-- for the foreign-key check). The renames carry the reference over to the new fg_orders.
CREATE TABLE fg_orders_v2 (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'expired', 'cancelled')),
    created_at TEXT NOT NULL,
    pay_by TEXT,
    idempotency_key TEXT NOT NULL,
    paid_at BIGINT,
    expired_at BIGINT,
    updated_at BIGINT NOT NULL,
    cancelled_at BIGINT
);
INSERT INTO fg_orders_v2 (id, event, user_id, status, created_at, pay_by, idempotency_key,
                          paid_at, expired_at, updated_at)
    SELECT id, event, user_id, status, created_at, pay_by, idempotency_key,
           paid_at, expired_at, updated_at
    FROM fg_orders;

CREATE TABLE fg_order_lines_v2 (
    order_id TEXT NOT NULL REFERENCES fg_orders_v2 (id),
    sku TEXT NOT NULL,
    qty BIGINT NOT NULL CHECK (qty > 0),
    unit_price BIGINT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (order_id, sku)
);
INSERT INTO fg_order_lines_v2 (order_id, sku, qty, unit_price, currency)
    SELECT order_id, sku, qty, unit_price, currency FROM fg_order_lines;

DROP TABLE fg_order_lines;
DROP TABLE fg_orders;
ALTER TABLE fg_orders_v2 RENAME TO fg_orders;
ALTER TABLE fg_order_lines_v2 RENAME TO fg_order_lines;
CREATE INDEX fg_orders_event_status ON fg_orders (event, status);
