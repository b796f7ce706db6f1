-- Version 1: refs. A key's text collates as bytes ("C"), so that the primary
-- key's order is the order list_refs returns.
CREATE TABLE orgo_refs (
    key text COLLATE "C" PRIMARY KEY,
    digest text NOT NULL
);
