-- Drivers and customers as people (issue 16): drivers' full profiles, a calendar of hour blocks
-- per driver instead of "one active booking per driver", customers' ratings, the OTP lockout
-- counters, and the retry stamp of bookings that searched again.

-- +goose Up
ALTER TABLE drivers ADD COLUMN phone VARCHAR(20) NOT NULL DEFAULT '';
ALTER TABLE drivers ADD COLUMN licence_no VARCHAR(32) NOT NULL DEFAULT '';
ALTER TABLE drivers ADD COLUMN licence_expires DATE NULL;
ALTER TABLE drivers ADD COLUMN cities VARCHAR(500) NOT NULL DEFAULT '[]';
ALTER TABLE drivers ADD COLUMN verified BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE drivers ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE bookings ADD COLUMN otp_wrong INT NOT NULL DEFAULT 0;
ALTER TABLE bookings ADD COLUMN otp_locked_until DATETIME(3) NULL;
ALTER TABLE bookings ADD COLUMN retried_at DATETIME(3) NULL;
ALTER TABLE bookings ADD COLUMN travel_buffer_minutes INT NOT NULL DEFAULT 30;

-- One row per driver who ever had a block: an assignment updates it first, so assignments of
-- one driver take turns on its row lock and each sees the blocks the one before committed.
CREATE TABLE driver_calendars (
    driver_id VARCHAR(64) NOT NULL,
    version   BIGINT      NOT NULL,
    PRIMARY KEY (driver_id)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The hour blocks of drivers' assigned (assigned, arrived, in_progress) bookings: start_at to
-- start_at + hours + travel buffer. A driver's blocks never overlap; a block goes when its
-- booking leaves those states.
CREATE TABLE driver_blocks (
    booking_id VARCHAR(64) NOT NULL,
    driver_id  VARCHAR(64) NOT NULL,
    start_at   DATETIME(3) NOT NULL,
    end_at     DATETIME(3) NOT NULL,
    PRIMARY KEY (booking_id),
    KEY driver_blocks_driver_start (driver_id, start_at)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO driver_blocks (booking_id, driver_id, start_at, end_at)
    SELECT id, driver_id, start_at, TIMESTAMPADD(MINUTE, hours * 60 + travel_buffer_minutes, start_at)
    FROM bookings WHERE status IN ('assigned', 'arrived', 'in_progress') AND driver_id IS NOT NULL;

-- driver_active (one active booking per driver) is no longer written or read. It stays, so that
-- the previous release keeps working on this schema during the deployment (OPERATIONS.md,
-- "Migrations": expand, then contract); a later release drops it.

-- Append-only; one rating per booking.
CREATE TABLE ratings (
    booking_id  VARCHAR(64)  NOT NULL,
    driver_id   VARCHAR(64)  NOT NULL,
    customer_id VARCHAR(64)  NOT NULL,
    stars       INT          NOT NULL,
    comment     VARCHAR(500) NOT NULL,
    created_at  DATETIME(3)  NOT NULL,
    PRIMARY KEY (booking_id),
    KEY ratings_driver_created (driver_id, created_at),
    CONSTRAINT ratings_stars CHECK (stars BETWEEN 1 AND 5)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE ratings;
DROP TABLE driver_blocks;
DROP TABLE driver_calendars;
ALTER TABLE bookings DROP COLUMN travel_buffer_minutes;
ALTER TABLE bookings DROP COLUMN retried_at;
ALTER TABLE bookings DROP COLUMN otp_locked_until;
ALTER TABLE bookings DROP COLUMN otp_wrong;
ALTER TABLE drivers DROP COLUMN suspended;
ALTER TABLE drivers DROP COLUMN verified;
ALTER TABLE drivers DROP COLUMN cities;
ALTER TABLE drivers DROP COLUMN licence_expires;
ALTER TABLE drivers DROP COLUMN licence_no;
ALTER TABLE drivers DROP COLUMN phone;
