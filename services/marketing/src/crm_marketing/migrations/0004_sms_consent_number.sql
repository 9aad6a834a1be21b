-- Review fixes (MK): SMS consent names the phone number it was given for (consents.address,
-- digits and '+' only), and counts only while the profile has that number. Grants recorded
-- before that named none: they stand for the number the profile has now (the aggregate does
-- the same when it replays such a grant: the number of the time).
UPDATE consents c SET address = regexp_replace(p.phone, '[^0-9+]', '', 'g')
FROM profiles p
WHERE c.customer_id = p.customer_id AND c.channel = 'sms' AND c.status = 'granted'
  AND c.address IS NULL AND p.phone IS NOT NULL;

-- At most a few double opt-in mails per address and hour.
CREATE INDEX IF NOT EXISTS consent_mails_address ON consent_mails (address, created_at);
