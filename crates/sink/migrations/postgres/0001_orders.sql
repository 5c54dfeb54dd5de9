-- The order sink's tables (SQLite and Postgres alike). Times are Unix ms unless named *_at TEXT.

-- One row per order, written once; its status only moves pending -> paid | expired.
CREATE TABLE fg_orders (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'expired')),
    -- RFC 3339, as the order document says.
    created_at TEXT NOT NULL,
    pay_by TEXT,
    idempotency_key TEXT NOT NULL,
    paid_at BIGINT,
    expired_at BIGINT,
    -- When the change that last moved the row happened at the origin.
    updated_at BIGINT NOT NULL
);
CREATE INDEX fg_orders_event_status ON fg_orders (event, status);

CREATE TABLE fg_order_lines (
    order_id TEXT NOT NULL REFERENCES fg_orders (id),
    sku TEXT NOT NULL,
    qty BIGINT NOT NULL CHECK (qty > 0),
    unit_price BIGINT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (order_id, sku)
);

-- Per event and sku: the origin's stock and the units of pending and paid orders.
CREATE TABLE fg_inventory (
    event TEXT NOT NULL,
    sku TEXT NOT NULL,
    stock BIGINT NOT NULL,
    sold BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event, sku),
    CONSTRAINT fg_inventory_sold_within_stock CHECK (sold >= 0 AND sold <= stock)
);

-- Changes whose inventory update was refused by its guard: kept, never applied, and alarmed.
CREATE TABLE fg_quarantine (
    event TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    order_json TEXT NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    quarantined_at BIGINT NOT NULL,
    PRIMARY KEY (event, stream_id)
);

-- Entries that failed --max-deliveries times. `fields` is a JSON array of [name, value] pairs.
CREATE TABLE fg_dead_letters (
    event TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    fields TEXT NOT NULL,
    error TEXT NOT NULL,
    deliveries BIGINT NOT NULL,
    dead_at BIGINT NOT NULL,
    PRIMARY KEY (event, stream_id)
);
