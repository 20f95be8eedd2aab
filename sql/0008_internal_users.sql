-- Users that flexdb makes itself (the platform admin created at the first start) rather
-- than a person: marked, so that list_users can tell them apart.
ALTER TABLE users ADD COLUMN is_internal boolean NOT NULL DEFAULT false;
UPDATE users SET is_internal = true
 WHERE is_platform_admin AND email LIKE 'platform-admin-%@flexdb.invalid';
