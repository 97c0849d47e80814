import org.mindrot.jbcrypt.BCrypt;

/**
 * Spring Security's DelegatingPasswordEncoder in front of its bcrypt encoder, with
 * jBCrypt's checkpw (Debian's libjbcrypt-java) as the bcrypt check: the stored value must
 * start with the encoder id {bcrypt}. Arguments: the stored value, then passwords; prints
 * one line per password: ok, mismatch, no-encoder, or invalid (a hash jBCrypt refuses).
 */
public class SpringCheck {
    public static void main(String[] args) {
        String stored = args[0];
        String id = "{bcrypt}";
        for (int i = 1; i < args.length; i++) {
            if (!stored.startsWith(id)) {
                System.out.println("no-encoder");
                continue;
            }
            try {
                boolean ok = BCrypt.checkpw(args[i], stored.substring(id.length()));
                System.out.println(ok ? "ok" : "mismatch");
            } catch (IllegalArgumentException e) {
                System.out.println("invalid");
            }
        }
    }
}
