-- The business's tables. SQL kept to what both MariaDB 10.11 and go-mysql-server accept:
-- no foreign keys (bookings outlive drivers' profiles; the store checks existence itself),
-- ids as binary-collated VARCHAR, times as DATETIME(3) in UTC, JSON kept as text.

-- +goose Up
CREATE TABLE customers (
    id         VARCHAR(64) NOT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (id)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE drivers (
    id            VARCHAR(64)  NOT NULL,
    name          VARCHAR(200) NOT NULL,
    rating        DOUBLE       NOT NULL,
    transmissions VARCHAR(200) NOT NULL,
    created_at    DATETIME(3)  NOT NULL,
    updated_at    DATETIME(3)  NOT NULL,
    PRIMARY KEY (id)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE bookings (
    id             VARCHAR(64)  NOT NULL,
    status         VARCHAR(16)  NOT NULL,
    -- prev_status is the status before the latest change, set by the same UPDATE that changes
    -- status, so the audit row knows where the booking came from without a locking read.
    prev_status    VARCHAR(16)  NOT NULL,
    customer_id    VARCHAR(64)  NOT NULL,
    pickup_lat     DOUBLE       NOT NULL,
    pickup_lng     DOUBLE       NOT NULL,
    pickup_address VARCHAR(500) NOT NULL,
    hours          INT          NOT NULL,
    start_at       DATETIME(3)  NOT NULL,
    created_at     DATETIME(3)  NOT NULL,
    transmission   VARCHAR(16)  NOT NULL,
    driver_id      VARCHAR(64)  NULL,
    driver_name    VARCHAR(200) NULL,
    driver_rating  DOUBLE       NULL,
    otp            VARCHAR(16)  NOT NULL,
    fare           TEXT         NOT NULL,
    arrived_at     DATETIME(3)  NULL,
    started_at     DATETIME(3)  NULL,
    ended_at       DATETIME(3)  NULL,
    cancel_reason  VARCHAR(500) NOT NULL,
    version        BIGINT       NOT NULL,
    updated_at     DATETIME(3)  NOT NULL,
    PRIMARY KEY (id),
    KEY bookings_status_created (status, created_at),
    KEY bookings_status_start (status, start_at),
    KEY bookings_customer_created (customer_id, created_at),
    KEY bookings_driver_created (driver_id, created_at),
    CONSTRAINT bookings_status_known CHECK (status IN ('scheduled', 'searching', 'assigned', 'arrived',
        'in_progress', 'completed', 'cancelled', 'unfulfilled'))
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE offers (
    id         VARCHAR(64) NOT NULL,
    booking_id VARCHAR(64) NOT NULL,
    driver_id  VARCHAR(64) NOT NULL,
    status     VARCHAR(16) NOT NULL,
    distance_m INT         NOT NULL,
    region     VARCHAR(64) NOT NULL,
    fence      BIGINT      NOT NULL,
    created_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    closed_at  DATETIME(3) NULL,
    PRIMARY KEY (id),
    KEY offers_driver_status (driver_id, status),
    KEY offers_booking_status (booking_id, status),
    KEY offers_status_created (status, created_at),
    CONSTRAINT offers_status_known CHECK (status IN ('open', 'accepted', 'declined', 'expired', 'revoked'))
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The highest fencing token an offer was made under, per matching region: an offer made under a
-- lower one comes from a process that lost the region's lease and is refused.
CREATE TABLE region_fences (
    region VARCHAR(64) NOT NULL,
    fence  BIGINT      NOT NULL,
    PRIMARY KEY (region)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Append-only: the store only ever inserts here.
CREATE TABLE booking_events (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    booking_id  VARCHAR(64)  NOT NULL,
    at          DATETIME(3)  NOT NULL,
    actor       VARCHAR(200) NOT NULL,
    from_status VARCHAR(16)  NOT NULL,
    to_status   VARCHAR(16)  NOT NULL,
    reason      VARCHAR(500) NOT NULL,
    version     BIGINT       NOT NULL,
    PRIMARY KEY (id),
    KEY booking_events_booking (booking_id, id)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE idempotency_keys (
    customer_id  VARCHAR(64)  NOT NULL,
    idem_key     VARCHAR(200) NOT NULL,
    request_hash VARCHAR(128) NOT NULL,
    booking_id   VARCHAR(64)  NOT NULL,
    created_at   DATETIME(3)  NOT NULL,
    PRIMARY KEY (customer_id, idem_key)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE outbox (
    id            BIGINT      NOT NULL AUTO_INCREMENT,
    event_id      VARCHAR(64) NOT NULL,
    booking_id    VARCHAR(64) NOT NULL,
    type          VARCHAR(32) NOT NULL,
    payload       MEDIUMTEXT  NOT NULL,
    created_at    DATETIME(3) NOT NULL,
    published_at  DATETIME(3) NULL,
    claimed_by    VARCHAR(64) NULL,
    claimed_until DATETIME(3) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY outbox_event (event_id),
    KEY outbox_unpublished (published_at, id),
    KEY outbox_claimed (claimed_by)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per driver holding an active (assigned, arrived, in_progress) booking. Its two unique
-- keys are what makes "one driver, one active booking" true whatever the callers do.
CREATE TABLE driver_active (
    driver_id  VARCHAR(64) NOT NULL,
    booking_id VARCHAR(64) NOT NULL,
    since      DATETIME(3) NOT NULL,
    PRIMARY KEY (driver_id),
    UNIQUE KEY driver_active_booking (booking_id)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE driver_active;
DROP TABLE outbox;
DROP TABLE idempotency_keys;
DROP TABLE booking_events;
DROP TABLE region_fences;
DROP TABLE offers;
DROP TABLE bookings;
DROP TABLE drivers;
DROP TABLE customers;
