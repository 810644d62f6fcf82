-- Cities and prices (issue 15): each booking keeps the city whose tariff priced it, the surge it
-- was priced with (in basis points: 15000 is ×1.5, 0 none), when its driver was assigned (the
-- cancellation grace runs from then) and the cancellation fee it was charged. Quotes are kept
-- for their five minutes (and a while after, for support); invoices are numbered per series
-- (a city and a financial year) from a counter row moved in the transaction that issues the
-- invoice, so numbers have no gaps: a rolled-back issue rolls back its number too.
-- ADD COLUMN at the end of a table is instant on MariaDB 10.3 and later.

-- +goose Up
ALTER TABLE bookings ADD COLUMN city VARCHAR(64) NOT NULL DEFAULT '';
ALTER TABLE bookings ADD COLUMN surge_bp INT NOT NULL DEFAULT 0;
ALTER TABLE bookings ADD COLUMN assigned_at DATETIME(3) NULL;
ALTER TABLE bookings ADD COLUMN cancellation_fee_paise BIGINT NOT NULL DEFAULT 0;

CREATE TABLE quotes (
    id          VARCHAR(64) NOT NULL,
    customer_id VARCHAR(64) NOT NULL,
    city        VARCHAR(64) NOT NULL,
    surge_bp    INT         NOT NULL,
    pickup_lat  DOUBLE      NOT NULL,
    pickup_lng  DOUBLE      NOT NULL,
    fare        TEXT        NOT NULL,
    created_at  DATETIME(3) NOT NULL,
    expires_at  DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    KEY quotes_expires (expires_at)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE invoice_counters (
    series VARCHAR(32) NOT NULL,
    last   BIGINT      NOT NULL,
    PRIMARY KEY (series)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE invoices (
    booking_id  VARCHAR(64) NOT NULL,
    invoice_no  VARCHAR(40) NOT NULL,
    series      VARCHAR(32) NOT NULL,
    seq         BIGINT      NOT NULL,
    city        VARCHAR(64) NOT NULL,
    issued_at   DATETIME(3) NOT NULL,
    total_paise BIGINT      NOT NULL,
    fare        TEXT        NOT NULL,
    PRIMARY KEY (booking_id),
    UNIQUE KEY invoices_no (invoice_no),
    UNIQUE KEY invoices_series_seq (series, seq)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE invoices;
DROP TABLE invoice_counters;
DROP TABLE quotes;
ALTER TABLE bookings DROP COLUMN cancellation_fee_paise;
ALTER TABLE bookings DROP COLUMN assigned_at;
ALTER TABLE bookings DROP COLUMN surge_bp;
ALTER TABLE bookings DROP COLUMN city;
