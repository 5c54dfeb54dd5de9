-- Orders can be cancelled by the shop (pending -> cancelled), giving their units back at once.
ALTER TABLE fg_orders DROP CONSTRAINT fg_orders_status_check;
ALTER TABLE fg_orders ADD CONSTRAINT fg_orders_status_check
    CHECK (status IN ('pending', 'paid', 'expired', 'cancelled'));
ALTER TABLE fg_orders ADD COLUMN cancelled_at BIGINT;
