-- Completed trips, written in the same transaction as the booking's in_progress -> completed
-- change: who drove whom, when, the route (an encoded polyline of the sampled trail), its
-- distance and the final fare. The booking row also gets the distance and the number of route
-- points, so that the booking as read and as published carries them without a join.
-- ADD COLUMN ... NULL at the end of a table is instant on MariaDB 10.3 and later.

-- +goose Up
ALTER TABLE bookings ADD COLUMN distance_m INT NULL;
ALTER TABLE bookings ADD COLUMN route_points INT NULL;

CREATE TABLE trips (
    booking_id   VARCHAR(64)  NOT NULL,
    driver_id    VARCHAR(64)  NOT NULL,
    customer_id  VARCHAR(64)  NOT NULL,
    started_at   DATETIME(3)  NOT NULL,
    ended_at     DATETIME(3)  NOT NULL,
    distance_m   INT          NOT NULL,
    route_points INT          NOT NULL,
    route        MEDIUMTEXT   NOT NULL,
    fare_paise   BIGINT       NOT NULL,
    fare         TEXT         NOT NULL,
    PRIMARY KEY (booking_id),
    KEY trips_driver_ended (driver_id, ended_at),
    KEY trips_customer_ended (customer_id, ended_at)
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE trips;
ALTER TABLE bookings DROP COLUMN route_points;
ALTER TABLE bookings DROP COLUMN distance_m;
